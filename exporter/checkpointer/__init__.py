"""The instrumented checkpointer and the factory that builds the configured one."""
