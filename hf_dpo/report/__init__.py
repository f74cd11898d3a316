"""The evaluation report: held-out preference metrics (`metrics`), judged generations of policy and
reference (`behaviour`), plots (`plots`) and markdown (`markdown`), written by `evaluation`."""
