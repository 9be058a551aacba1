//! From the Kubernetes view's Service feed to the reconciler's rounds: only
//! the Services whose object or slices changed since the last round are
//! copied and converted, so a round after one slice change among 10k costs
//! one Service's work. A full round (every Service converted and compared)
//! runs at start, after a relist of either watch, and when the caller asks
//! (weftd does every [`super::FULL_RESYNC`], a safety net for a change the
//! feed would have missed).

use weft_k8s::index::{ServiceChanges, ServiceFeed};
use weft_lb::ServiceName;

use super::convert;
use super::reconciler::Inputs;

/// One round's input.
#[derive(Debug)]
pub enum Round {
    /// Every Service with its slices.
    Full(Inputs),
    /// The Services that changed, each with its whole input now (`None`
    /// and no slices: gone).
    Changed(Inputs),
}

/// Conversions so far, to see what a round cost (tests, logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converted {
    pub services: u64,
    pub slices: u64,
    pub full_rounds: u64,
}

pub struct Follow {
    feed: ServiceFeed,
    converted: Converted,
}

impl Follow {
    pub fn new(feed: ServiceFeed) -> Follow {
        Follow {
            feed,
            converted: Converted::default(),
        }
    }

    pub fn converted(&self) -> Converted {
        self.converted
    }

    /// The next round's input; `full` asks for every Service whatever
    /// changed.
    pub fn next(&mut self, full: bool) -> Round {
        match self.feed.take(full) {
            ServiceChanges::Full { services, slices } => {
                self.converted.services += services.len() as u64;
                self.converted.slices += slices.len() as u64;
                self.converted.full_rounds += 1;
                Round::Full(convert::inputs(&services, &slices))
            }
            ServiceChanges::Changed(list) => {
                let mut out = Inputs::new();
                for c in list {
                    self.converted.services += u64::from(c.service.is_some());
                    self.converted.slices += c.slices.len() as u64;
                    let name = ServiceName {
                        namespace: c.key.namespace,
                        name: c.key.name,
                    };
                    let service = c.service.as_ref().map(convert::service);
                    let slices = c.slices.iter().filter_map(convert::slice).collect();
                    out.insert(name, (service, slices));
                }
                Round::Changed(out)
            }
        }
    }
}
