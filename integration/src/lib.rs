//! Test harness for agent-shipper.
