//! How long the API server takes: a tower layer on every kube client weft
//! builds ([`client`]) times each request, from the call to the response's
//! head, and hands (verb, resource, duration) to the observer the binary
//! set ([`set_observer`]; weftd's metrics). A watch is timed to its first
//! answer, not its whole life. The verbs are the API server's own
//! (`apiserver_request_duration_seconds`): get, list, watch, create,
//! update, patch, delete, deletecollection.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::{Layer, Service};

/// Where timings go: (verb, resource, time to the response head).
pub type Observer = fn(&'static str, &str, Duration);

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Sets where every client's timings go (once per process; later calls are
/// ignored). Without one, nothing is recorded.
pub fn set_observer(f: Observer) {
    let _ = OBSERVER.set(f);
}

/// A kube client whose requests are timed.
pub fn client(cfg: Config) -> Result<Client, crate::K8sError> {
    Ok(ClientBuilder::try_from(cfg)
        .map_err(|e| crate::K8sError::Client(e.to_string()))?
        .with_layer(&TimingLayer)
        .build())
}

/// The API server's verb and the resource of a request: the resource is
/// the path segment after the namespace (or after the group version), with
/// a subresource as `pods/status`.
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest: &[&str] = match segs.first() {
        Some(&"api") if segs.len() >= 2 => &segs[2..],
        Some(&"apis") if segs.len() >= 3 => &segs[3..],
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        r => r,
    };
    let (resource, named) = match rest {
        [] => ("".to_string(), false),
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    };
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    let resource = if resource.is_empty() {
        "other".into()
    } else {
        resource
    };
    (verb, resource)
}

#[derive(Clone, Copy)]
struct TimingLayer;

impl<S> Layer<S> for TimingLayer {
    type Service = Timing<S>;

    fn layer(&self, inner: S) -> Timing<S> {
        Timing { inner }
    }
}

#[derive(Clone)]
struct Timing<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Timing<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let observer = OBSERVER.get().copied();
        let what = observer.map(|_| classify(req.method(), req.uri()));
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let (Some(f), Some((verb, resource))) = (observer, what) {
                f(verb, &resource, start.elapsed());
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

    /// A real kube client through the layer, against a loopback server that
    /// answers one request with a 404 Status (the pod is not there).
    #[test]
    fn a_real_client_request_reaches_the_observer() {
        set_observer(|verb, resource, _| SEEN.lock().unwrap().push((verb, resource.into())));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
            write!(
                s,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let c = client(Config::new(url.parse().unwrap())).unwrap();
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(c, "x");
            pods.get_opt("a").await
        });
        assert!(matches!(got, Ok(None)), "{got:?}");
        server.join().unwrap();
        assert!(SEEN.lock().unwrap().contains(&("get", "pods".to_string())));
    }

    fn c(m: &str, u: &str) -> (&'static str, String) {
        classify(&m.parse().unwrap(), &u.parse().unwrap())
    }

    #[test]
    fn verbs_and_resources_are_the_api_servers() {
        assert_eq!(
            c("GET", "/api/v1/namespaces/x/pods/a"),
            ("get", "pods".into())
        );
        assert_eq!(c("GET", "/api/v1/pods?limit=500"), ("list", "pods".into()));
        assert_eq!(
            c(
                "GET",
                "/api/v1/namespaces/x/pods?watch=true&resourceVersion=5"
            ),
            ("watch", "pods".into())
        );
        assert_eq!(
            c("GET", "/apis/networking.k8s.io/v1/networkpolicies?watch=1"),
            ("watch", "networkpolicies".into())
        );
        assert_eq!(
            c("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
            ("create", "tokenreviews".into())
        );
        assert_eq!(
            c("PUT", "/api/v1/namespaces/x/pods/a/status"),
            ("update", "pods/status".into())
        );
        assert_eq!(c("PATCH", "/api/v1/nodes/n1"), ("patch", "nodes".into()));
        assert_eq!(
            c(
                "DELETE",
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"
            ),
            ("delete", "leases".into())
        );
        assert_eq!(
            c("DELETE", "/api/v1/namespaces/x/configmaps"),
            ("deletecollection", "configmaps".into())
        );
        assert_eq!(
            c("GET", "/api/v1/namespaces/x"),
            ("get", "namespaces".into())
        );
        assert_eq!(c("GET", "/version"), ("list", "other".into()));
    }
}
