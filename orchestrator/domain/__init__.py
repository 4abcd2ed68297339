"""Pure decisions: the pool's rules, the status shape and the Slack texts. No I/O of any kind."""
