"""The scheduler: the control plane that stores resources and places model replicas on servers."""
