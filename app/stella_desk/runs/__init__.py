"""The Runs page: the list of workflow runs, starting one, and the live run monitor."""
