//! weftd, the node agent.
