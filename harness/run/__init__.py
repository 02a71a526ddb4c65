"""Where jobs run: the job graph, submission records, status, cluster profiles, the plan."""
