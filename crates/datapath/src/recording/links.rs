//! The fake of [`Links`]: a model of the attached pod links.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{lock, mac_for, Call, Recorder};
use crate::{Attached, DatapathError, HostLink, Links, PodLink};

#[derive(Default)]
struct Model {
    /// host_ifname → (link, attached)
    links: BTreeMap<String, (PodLink, Attached)>,
    next_ifindex: u32,
    check_problems: Vec<String>,
    restore_changes: bool,
}

/// Records calls into its [`Recorder`] and models the links. Cheap to clone
/// (shared state).
#[derive(Clone, Default)]
pub struct FakeLinks {
    rec: Recorder,
    model: Arc<Mutex<Model>>,
}

impl std::fmt::Debug for FakeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLinks")
            .field("links", &lock(&self.model).links.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FakeLinks {
    /// A fake with a recorder of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake recording into `rec` (shared with other fakes).
    pub fn with_recorder(rec: Recorder) -> Self {
        FakeLinks {
            rec,
            model: Default::default(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// What `check` answers for attached links (missing links are reported
    /// regardless).
    pub fn set_check_problems(&self, problems: Vec<String>) {
        lock(&self.model).check_problems = problems;
    }

    /// What `restore_host_side` answers.
    pub fn set_restore_changes(&self, changed: bool) {
        lock(&self.model).restore_changes = changed;
    }

    /// The links attached and not detached, by host ifname.
    pub fn attached(&self) -> BTreeMap<String, (PodLink, Attached)> {
        lock(&self.model).links.clone()
    }

    /// Whether a host link of that name is in the model.
    pub fn has(&self, host_ifname: &str) -> bool {
        lock(&self.model).links.contains_key(host_ifname)
    }

    /// Removes a link from the model without a call (simulates the kernel
    /// losing it, e.g. the pod netns being deleted).
    pub fn forget(&self, host_ifname: &str) {
        lock(&self.model).links.remove(host_ifname);
    }

    /// Adds a link to the model, as a successful create or attach does.
    fn model_create(&self, link: &PodLink) -> Attached {
        let mut m = lock(&self.model);
        m.next_ifindex += 1;
        let n = m.next_ifindex;
        let a = Attached {
            pod_mac: mac_for(0x58, n),
            host_ifindex: 100 + n,
        };
        m.links.insert(link.host_ifname.clone(), (link.clone(), a));
        a
    }
}

impl Links for FakeLinks {
    fn attach(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.rec.enter(Call::Attach(link.clone()))?;
        Ok(self.model_create(link))
    }

    fn create_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.rec.enter(Call::CreateLink(link.clone()))?;
        Ok(self.model_create(link))
    }

    fn configure_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        let r = self.rec.enter(Call::ConfigureLink(link.clone()));
        let mut m = lock(&self.model);
        if let Err(e) = r {
            // like the kernel implementation: a failed configure removes the pair
            m.links.remove(&link.host_ifname);
            return Err(e);
        }
        let Some(entry) = m.links.get_mut(&link.host_ifname) else {
            return Err(DatapathError::LinkNotFound {
                name: link.host_ifname.clone(),
            });
        };
        entry.0 = link.clone();
        Ok(entry.1)
    }

    fn detach(&self, host_ifname: &str) -> Result<(), DatapathError> {
        self.rec.enter(Call::Detach(host_ifname.to_string()))?;
        lock(&self.model).links.remove(host_ifname);
        Ok(())
    }

    fn check(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<Vec<String>, DatapathError> {
        self.rec.enter(Call::Check {
            link: link.clone(),
            pod_mac,
        })?;
        let m = lock(&self.model);
        if !m.links.contains_key(&link.host_ifname) {
            return Ok(vec![format!("host interface {} missing", link.host_ifname)]);
        }
        Ok(m.check_problems.clone())
    }

    fn restore_host_side(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<bool, DatapathError> {
        self.rec.enter(Call::RestoreHostSide {
            link: link.clone(),
            pod_mac,
        })?;
        let m = lock(&self.model);
        if !m.links.contains_key(&link.host_ifname) {
            return Err(DatapathError::LinkNotFound {
                name: link.host_ifname.clone(),
            });
        }
        Ok(m.restore_changes)
    }

    fn list_host_links(&self, prefix: &str) -> Result<Vec<HostLink>, DatapathError> {
        self.rec.enter(Call::ListHostLinks(prefix.to_string()))?;
        Ok(lock(&self.model)
            .links
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, (_, a))| HostLink {
                name: name.clone(),
                ifindex: a.host_ifindex,
                peer_netnsid: Some(0),
            })
            .collect())
    }
}
