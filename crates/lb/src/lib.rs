//! Service load balancing without kube-proxy: the pure part.
//!
//! Services and EndpointSlices ([`model`], converted from the API by the
//! Kubernetes adapter) become frontends with the backends each may use
//! ([`frontend`], [`endpoints`]: kube-proxy's rules for ready, serving and
//! terminating endpoints and the traffic policies), then the desired
//! content of the data path's maps with stable service and backend IDs
//! ([`maps`], [`ids`]), Maglev tables ([`maglev`]) where configured. [`diff`]
//! turns desired vs current maps into ordered, idempotent operations,
//! [`incremental`] the same for one changed Service at a time, [`reconcile`]
//! applies them through a writer that may fail;
//! [`select`] holds the per-flow decisions (slot, Maglev lookup, ClientIP
//! affinity) the programs mirror; [`dump`] renders the maps as one sorted
//! text. No kernel, no I/O, no async.

pub mod diff;
pub mod dump;
pub mod endpoints;
pub mod error;
pub mod frontend;
pub mod hash;
pub mod ids;
pub mod incremental;
pub mod maglev;
pub mod maps;
pub mod model;
pub mod reconcile;
pub mod select;

pub use diff::{diff, Op};
pub use dump::{dump_desired, dump_maps};
pub use endpoints::{BackendAddr, BackendState, Verdict};
pub use error::LbError;
pub use frontend::{Frontend, FrontendAddr, FrontendKind, NodeView, Scope, Skipped};
pub use ids::{BackendId, IdAllocator, ServiceId};
pub use incremental::LbState;
pub use maps::{build, Algorithm, Config, Desired, LbMaps};
pub use model::*;
pub use reconcile::{reconcile, runs, MapWriter, Round};
