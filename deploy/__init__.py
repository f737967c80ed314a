"""Running the serving system on many nodes: the one-machine cluster (`make cluster`), node
control agents, HAProxy and Prometheus configuration, Kubernetes manifests (deploy/k8s/)."""
