"""Peak-memory planning before anything is downloaded: architecture facts (`arch`), the recipe's knobs that change
memory (`settings`), the estimate term by term (`estimate`), and the plan against the memory there is with what
to turn (`fit`: `hf-dpo plan`)."""
