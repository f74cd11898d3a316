"""The evaluation report: held-out preference metrics (`estimates`: intervals and metrics, computed through the
`evaluate` modules in `evaluate_modules/`, loaded offline by `evaluate_offline`), judged answers of policy and
reference (`prompts`, `generation`, `behaviour`, `comparison`), plots (`plots`), markdown (`markdown`) and every
judged answer (`generations_file`), put together and written by `build`; its options are `ReportOptions`
(`options`)."""
