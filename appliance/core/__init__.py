"""The core model: ids, partitions, the state vector, policies, errors, transition rules."""
