//! The Docker engine as a provider (bollard).
