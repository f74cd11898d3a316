"""Step 1 of DPO: preference pairs.

Sample K answers per prompt from the reference policy (`sampling`), score them with a judge (`judges`: a
function, criteria with an order of importance, or a reward model) or by hand in the browser
(`label_server`), and write (prompt, chosen, rejected) rows that `hf_dpo.data` reads. `demo_task` is the
demo's code-generated task and rule judge.
"""
