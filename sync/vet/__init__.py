"""The vetting team's tool: pull sealed submissions, decrypt locally, decide, publish."""
