"""The evaluation report: held-out preference metrics (`metrics`, computed through the `evaluate` modules of
`evaluate_metrics`), judged answers of policy and reference (`prompts`, `generation`, `behaviour`), plots
(`plots`), markdown (`markdown`) and every judged answer (`generations_file`), written by `evaluation`."""
