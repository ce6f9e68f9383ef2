//! A Kubernetes cluster as a provider (kube).
