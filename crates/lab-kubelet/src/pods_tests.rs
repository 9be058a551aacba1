//! The pod loop against a fake node and a fake API server: what it starts,
//! writes, tears down and deletes for a sequence of watch events.

use std::sync::Mutex;

use serde_json::json;

use super::*;

#[derive(Default)]
struct FakeHost {
    recorded: Vec<KubePod>,
    /// Namespaces that still exist (for `resume`).
    alive: Vec<String>,
    log: Mutex<Vec<String>>,
}

impl Host for FakeHost {
    fn start(&self, pod: &PodView, started_at: &str) -> anyhow::Result<KubePod> {
        self.log.lock().unwrap().push(format!("start {}", pod.name));
        Ok(record(&pod.uid, &pod.name, started_at))
    }

    fn resume(&self, rec: &KubePod, _pod: &PodView) -> bool {
        self.log
            .lock()
            .unwrap()
            .push(format!("resume {}", rec.name));
        self.alive.contains(&rec.uid)
    }

    fn stop(&self, rec: &KubePod) -> anyhow::Result<()> {
        self.log.lock().unwrap().push(format!("stop {}", rec.name));
        Ok(())
    }

    fn recorded(&self) -> Vec<KubePod> {
        self.recorded.clone()
    }
}

#[derive(Default)]
struct FakeApi {
    log: Mutex<Vec<(String, serde_json::Value)>>,
}

impl PodApi for &FakeApi {
    async fn patch_status(
        &self,
        _ns: &str,
        name: &str,
        patch: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push((format!("patch {name}"), patch));
        Ok(())
    }

    async fn delete(&self, _ns: &str, name: &str, uid: &str) -> anyhow::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push((format!("delete {name}"), json!(uid)));
        Ok(())
    }
}

fn record(uid: &str, name: &str, started_at: &str) -> KubePod {
    KubePod {
        uid: uid.into(),
        namespace: "demo".into(),
        name: name.into(),
        host_network: false,
        netns: format!("/run/netns/lab-{name}").into(),
        sandbox_id: weft_lab::kubelet::sandbox_id(uid),
        ips: vec!["10.244.0.7".parse().unwrap()],
        cni_result: json!({}),
        started_at: started_at.into(),
    }
}

fn pod(uid: &str, name: &str, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "demo", "uid": uid},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
    });
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        for (k2, y) in x.as_object().cloned().unwrap_or_default() {
            v[&k][k2] = y;
        }
    }
    serde_json::from_value(v).unwrap()
}

/// The pod as the API shows it after the kubelet's last patch of it.
fn patched(p: &Pod, api: &FakeApi) -> Pod {
    let log = api.log.lock().unwrap();
    let (_, patch) = log
        .iter()
        .rev()
        .find(|(w, _)| w.starts_with("patch"))
        .unwrap();
    let mut v = serde_json::to_value(p).unwrap();
    v["status"] = patch["status"].clone();
    serde_json::from_value(v).unwrap()
}

fn host_log(k: &Kubelet<&FakeApi, FakeHost>) -> Vec<String> {
    k.host.log.lock().unwrap().clone()
}

fn api_log(api: &FakeApi) -> Vec<String> {
    api.log
        .lock()
        .unwrap()
        .iter()
        .map(|(w, _)| w.clone())
        .collect()
}

fn kubelet(api: &FakeApi, host: FakeHost) -> Kubelet<&FakeApi, FakeHost> {
    Kubelet::new(api, host, vec!["198.18.0.10".parse().unwrap()])
}

#[tokio::test]
async fn a_new_pod_is_started_once_and_its_status_written_once() {
    let api = FakeApi::default();
    let mut k = kubelet(&api, FakeHost::default());
    let p = pod("u1", "web-1", json!({}));
    k.handle(Event::Apply(p.clone())).await;
    assert_eq!(host_log(&k), vec!["start web-1"]);
    assert_eq!(api_log(&api), vec!["patch web-1"]);
    let st = api.log.lock().unwrap()[0].1["status"].clone();
    assert_eq!(st["podIP"], "10.244.0.7");
    assert_eq!(st["hostIP"], "198.18.0.10");
    assert_eq!(st["phase"], "Running");
    // the watch brings the patched pod back: nothing more to do
    let shown = patched(&p, &api);
    k.handle(Event::Apply(shown)).await;
    k.resync().await;
    assert_eq!(host_log(&k), vec!["start web-1"]);
    assert_eq!(api_log(&api), vec!["patch web-1"]);
}

#[tokio::test]
async fn a_resync_before_the_watch_brings_the_patch_back_patches_nothing_again() {
    let api = FakeApi::default();
    let mut k = kubelet(&api, FakeHost::default());
    let mut p = pod("u1", "web-1", json!({}));
    p.metadata.resource_version = Some("7".into());
    k.handle(Event::Apply(p.clone())).await;
    assert_eq!(api_log(&api), vec!["patch web-1"]);
    // the watch is behind: the kubelet still holds version 7, unpatched
    k.resync().await;
    k.resync().await;
    assert_eq!(api_log(&api), vec!["patch web-1"], "one patch per version");
    // someone else changed the pod and its status is still not ours: again
    p.metadata.resource_version = Some("8".into());
    k.handle(Event::Apply(p.clone())).await;
    assert_eq!(api_log(&api), vec!["patch web-1", "patch web-1"]);
    // the patched pod arrives: nothing more, also after it
    let mut shown = patched(&p, &api);
    shown.metadata.resource_version = Some("9".into());
    k.handle(Event::Apply(shown)).await;
    k.resync().await;
    assert_eq!(api_log(&api).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn deletion_writes_not_ready_then_tears_down_and_deletes_after_the_grace() {
    let api = FakeApi::default();
    let mut k = kubelet(&api, FakeHost::default());
    let p = pod("u1", "web-1", json!({}));
    k.handle(Event::Apply(p.clone())).await;
    let deleting = pod(
        "u1",
        "web-1",
        json!({"metadata": {"deletionTimestamp": "2026-12-03T10:00:00Z", "deletionGracePeriodSeconds": 3}}),
    );
    let mut deleting = serde_json::to_value(deleting).unwrap();
    deleting["status"] = serde_json::to_value(patched(&p, &api)).unwrap()["status"].clone();
    k.handle(Event::Apply(serde_json::from_value(deleting).unwrap()))
        .await;
    let last = api.log.lock().unwrap().last().unwrap().1.clone();
    let ready = last["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(host_log(&k), vec!["start web-1"], "still serving");
    let before = tokio::time::Instant::now();
    let uid = k.grace_rx.recv().await.unwrap();
    assert!(before.elapsed() >= Duration::from_secs(3));
    k.grace_over(&uid).await;
    assert_eq!(host_log(&k), vec!["start web-1", "stop web-1"]);
    assert_eq!(api_log(&api).last().unwrap(), "delete web-1");
}

#[tokio::test]
async fn a_pod_deleted_before_it_ran_is_only_deleted() {
    let api = FakeApi::default();
    let mut k = kubelet(&api, FakeHost::default());
    let p = pod(
        "u1",
        "web-1",
        json!({"metadata": {"deletionTimestamp": "2026-12-03T10:00:00Z"}}),
    );
    k.handle(Event::Apply(p)).await;
    assert!(host_log(&k).is_empty());
    assert_eq!(api_log(&api), vec!["delete web-1"]);
}

#[tokio::test]
async fn a_restart_adopts_listed_pods_and_tears_down_the_rest() {
    let api = FakeApi::default();
    let host = FakeHost {
        recorded: vec![
            record("u1", "kept", "t"),
            record("u2", "gone-from-api", "t"),
            record("u3", "netns-lost", "t"),
        ],
        alive: vec!["u1".into()],
        ..FakeHost::default()
    };
    let mut k = kubelet(&api, host);
    k.handle(Event::Init).await;
    k.handle(Event::InitApply(pod("u1", "kept", json!({}))))
        .await;
    k.handle(Event::InitApply(pod("u3", "netns-lost", json!({}))))
        .await;
    k.handle(Event::InitDone).await;
    assert_eq!(
        host_log(&k),
        vec![
            "resume kept",
            "resume netns-lost",
            "start netns-lost",
            "stop gone-from-api"
        ],
        "kept resumes in place, a lost namespace starts over, an unlisted pod goes"
    );
    assert_eq!(k.running.len(), 2);
}

#[tokio::test]
async fn a_delete_event_tears_down_without_deleting_again() {
    let api = FakeApi::default();
    let mut k = kubelet(&api, FakeHost::default());
    let p = pod("u1", "web-1", json!({}));
    k.handle(Event::Apply(p.clone())).await;
    k.handle(Event::Delete(p)).await;
    assert_eq!(host_log(&k), vec!["start web-1", "stop web-1"]);
    assert_eq!(api_log(&api), vec!["patch web-1"]);
    assert!(k.running.is_empty() && k.seen.is_empty());
}
