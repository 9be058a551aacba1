//! The shim's flow: environment, config, one request to weftd, one answer
//! on stdout.

use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use weft_api::http::{self, HttpError};
use weft_api::{
    paths, AddRequest, Attachment, CheckRequest, DelRequest, GcRequest, PodRef, StatusRequest,
};
use weft_cni_spec::config::too_large;
use weft_cni_spec::version::sniff_cni_version;
use weft_cni_spec::{
    codes, render_add, version_reply, CniEnv, CniError, CniVersion, Command, NetConf,
    NeutralResult, MAX_CONFIG_BYTES,
};

use crate::logging::log_at;
use crate::spool;

/// How long weftd has to answer once connected (read and write timeouts on
/// the socket). ADD is the slow verb: IPAM may go through the cluster store
/// with retries, then the veth, addresses, routes and sysctls are set up.
/// That normally takes milliseconds to a few seconds; 120 s matches the
/// kubelet's default CRI runtime-request timeout (2 min), so a wedged weftd
/// turns into a clean CNI error at about the time the runtime gives up,
/// instead of a shim process that hangs forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Budget for connecting. Connecting to a unix socket succeeds or fails at
/// once (ENOENT, ECONNREFUSED, EACCES), except when weftd's accept backlog
/// is full, where connect(2) blocks. `weft_api::http::call` sets its
/// timeouts only after connecting, so a watchdog thread enforces
/// [`CONNECT_BUDGET`] + [`REPLY_TIMEOUT`] as a hard deadline for the whole
/// exchange.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(2);
/// Extra stdin read beyond the limit, only to report an oversized config's
/// real size; past this, the size is reported as "at least".
const OVERSIZE_DRAIN: u64 = 64 << 20;

/// Set once something was printed on stdout; whoever sets it first (main
/// flow, watchdog, panic path) owns stdout.
static EMITTED: AtomicBool = AtomicBool::new(false);
/// Index into `CniVersion::ALL` + 1 of the version errors are stamped with;
/// 0 means not known yet (newest is used).
static ERROR_VERSION: AtomicUsize = AtomicUsize::new(0);

fn set_error_version(v: CniVersion) {
    let ix = CniVersion::ALL.iter().position(|x| *x == v).unwrap_or(0);
    ERROR_VERSION.store(ix + 1, Ordering::Relaxed);
}

fn error_version() -> CniVersion {
    match ERROR_VERSION.load(Ordering::Relaxed) {
        0 => CniVersion::NEWEST,
        ix => CniVersion::ALL[ix - 1],
    }
}

/// What the shim ends with.
enum Outcome {
    /// Exit 0, with this JSON on stdout (ADD, VERSION) or nothing.
    Ok(Option<serde_json::Value>),
    /// Exit 1 with the error on stdout.
    Err(CniError),
}

impl From<CniError> for Outcome {
    fn from(e: CniError) -> Self {
        Outcome::Err(e)
    }
}

/// Writes the outcome to stdout unless something already did; returns the
/// exit code.
fn emit(outcome: Outcome) -> i32 {
    let (body, code) = match outcome {
        Outcome::Ok(None) => (None, 0),
        Outcome::Ok(Some(v)) => (Some(serde_json::to_vec(&v)), 0),
        Outcome::Err(mut e) => {
            e.cni_version = error_version().as_str().to_string();
            log_at!(Error, "code {}: {}", e.code, e.msg);
            (Some(serde_json::to_vec(&e)), 1)
        }
    };
    if EMITTED.swap(true, Ordering::SeqCst) {
        // The watchdog got there first and is exiting the process.
        std::thread::park();
    }
    if let Some(Ok(mut bytes)) = body {
        bytes.push(b'\n');
        let mut out = io::stdout().lock();
        let _ = out.write_all(&bytes);
        let _ = out.flush();
    }
    code
}

/// Runs the shim; never panics past this point.
pub fn main_entry() -> i32 {
    match panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(outcome) => emit(outcome),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            emit(Outcome::Err(
                CniError::new(
                    codes::INTERNAL,
                    "weft-cni crashed (a bug); retry, and report it with the weft-cni log and this error",
                )
                .with_details(what),
            ))
        }
    }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| {
        v.into_string()
            .unwrap_or_else(|v| v.to_string_lossy().into_owned())
    })
}

/// Reads stdin up to the limit; an oversized config is drained (bounded) to
/// report its size.
fn read_stdin() -> Result<Vec<u8>, CniError> {
    let io_err = |e: io::Error| {
        CniError::new(
            codes::IO_FAILURE,
            format!("cannot read the network config from stdin ({e}); check the container runtime"),
        )
    };
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::with_capacity(4096);
    (&mut stdin)
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() > MAX_CONFIG_BYTES {
        let rest = io::copy(&mut (&mut stdin).take(OVERSIZE_DRAIN), &mut io::sink()).unwrap_or(0);
        return Err(too_large(buf.len() + rest as usize));
    }
    Ok(buf)
}

fn run() -> Outcome {
    #[cfg(debug_assertions)]
    if std::env::var_os("WEFT_CNI_TEST_PANIC").is_some() {
        panic!("test panic requested by WEFT_CNI_TEST_PANIC");
    }

    // CNI_COMMAND first: without it this is a person at a terminal, and
    // reading stdin would hang.
    if env_lookup("CNI_COMMAND")
        .filter(|c| !c.is_empty())
        .is_none()
    {
        return CniEnv::from_lookup(&env_lookup)
            .err()
            .map(Outcome::Err)
            .unwrap_or(Outcome::Ok(None));
    }
    let stdin = match read_stdin() {
        Ok(b) => b,
        // VERSION never fails: a runtime must always be able to probe.
        Err(_) if env_lookup("CNI_COMMAND").as_deref() == Some("VERSION") => Vec::new(),
        Err(e) => return e.into(),
    };
    if let Some(v) = sniff_cni_version(&stdin) {
        set_error_version(v);
    }
    let env = match CniEnv::from_lookup(&env_lookup) {
        Ok(e) => e,
        Err(e) => return e.into(),
    };
    if env.command == Command::Version {
        let reply = version_reply(&stdin);
        return Outcome::Ok(Some(serde_json::to_value(reply).unwrap_or_default()));
    }
    let conf = match NetConf::parse(&stdin).and_then(|c| c.check_for(env.command).map(|()| c)) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    set_error_version(conf.cni_version);
    if let Some(path) = &conf.log_file {
        let ctx = if env.command.is_attachment_verb() {
            format!(
                "{} {}/{}",
                env.command.as_str(),
                env.container_id,
                env.ifname
            )
        } else {
            format!("{} {}", env.command.as_str(), conf.name)
        };
        crate::logging::init(path, conf.log_level, ctx);
    }
    match dispatch(&env, &conf) {
        Ok(out) => Outcome::Ok(out),
        Err(e) => Outcome::Err(e),
    }
}

fn socket_of(conf: &NetConf) -> &str {
    conf.agent_socket
        .as_deref()
        .unwrap_or(weft_api::DEFAULT_SOCKET)
}

fn attachment(env: &CniEnv) -> Attachment {
    Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }
}

fn body<T: serde::Serialize>(req: &T) -> Result<Vec<u8>, CniError> {
    serde_json::to_vec(req).map_err(|e| {
        CniError::new(
            codes::INTERNAL,
            format!("cannot encode the request for weftd ({e}); report this bug"),
        )
    })
}

fn dispatch(env: &CniEnv, conf: &NetConf) -> Result<Option<serde_json::Value>, CniError> {
    let network = conf.name.clone();
    let (path, payload) = match env.command {
        Command::Add => {
            // Reject a malformed prevResult before anything is allocated.
            conf.prev_result_neutral()?;
            let req = AddRequest {
                attachment: attachment(env),
                netns: env.netns.clone(),
                network,
                pod: PodRef {
                    namespace: env.args.k8s_pod_namespace().to_string(),
                    name: env.args.k8s_pod_name().to_string(),
                    uid: env.args.k8s_pod_uid().to_string(),
                },
                mtu: conf.mtu,
                want_ipv4: conf.ip_families.ipv4,
                want_ipv6: conf.ip_families.ipv6,
                requested_ips: {
                    // runtimeConfig.ips / args.cni.ips first; CNI_ARGS IP is
                    // the older convention (podman's `--ip`, host-local's)
                    let from_conf = conf.requested_ips();
                    if from_conf.is_empty() {
                        env.args.ips()?
                    } else {
                        one_per_family(from_conf)?
                    }
                },
            };
            (paths::CNI_ADD, body(&req)?)
        }
        Command::Del => {
            let req = DelRequest {
                attachment: attachment(env),
                netns: env.netns.clone(),
                network,
            };
            (paths::CNI_DEL, body(&req)?)
        }
        Command::Check => {
            let req = CheckRequest {
                attachment: attachment(env),
                netns: env.netns.clone(),
                network,
                prev_result: conf.prev_result_neutral()?,
            };
            (paths::CNI_CHECK, body(&req)?)
        }
        Command::Gc => {
            let valid = conf.valid_attachments.clone().unwrap_or_default();
            let req = GcRequest {
                network,
                valid_attachments: valid
                    .into_iter()
                    .map(|a| Attachment {
                        container_id: a.container_id,
                        ifname: a.ifname,
                    })
                    .collect(),
            };
            (paths::CNI_GC, body(&req)?)
        }
        Command::Status => (paths::CNI_STATUS, body(&StatusRequest { network })?),
        Command::Version => unreachable!("VERSION is answered before dispatch"),
    };

    let socket = socket_of(conf);
    log_at!(Debug, "POST {path} to {socket}");
    let (reply_timeout, deadline) = timeouts();
    start_watchdog(socket.to_string(), deadline);
    let reply = http::call(Path::new(socket), "POST", path, &payload, reply_timeout);
    let resp = match reply {
        Ok(r) => r,
        Err(HttpError::Connect { source, .. }) => return agent_unreachable(env, conf, socket, &source),
        // weftd took the DEL and went away before a full answer (killed,
        // crashed): it may have done part of it or none. A spooled DEL is
        // replayed by weftd (DEL is idempotent), and a DEL weftd began is
        // finished at its start anyway; the runtime need not retry.
        Err(e) if env.command == Command::Del && cut_short(&e) => {
            return spool_del(
                env,
                conf,
                format!("weftd at {socket} stopped answering in the middle of the DEL ({e})"),
            )
        }
        Err(e) => {
            return Err(CniError::new(
                codes::TRY_AGAIN_LATER,
                format!(
                    "weftd at {socket} failed during the request ({e}); check weftd (journalctl -u weftd) and retry"
                ),
            ))
        }
    };
    log_at!(Info, "weftd answered http {}", resp.status);

    if !(200..300).contains(&resp.status) {
        let err = match serde_json::from_slice::<CniError>(&resp.body) {
            Ok(e) => e,
            Err(_) => bad_body(socket, resp.status, &resp.body),
        };
        // weftd is up but cannot finish a DEL now (its datastore is away):
        // spool it like a DEL weftd never got; it replays the spool until
        // the DEL goes through, so the runtime can move on and no address leaks
        if env.command == Command::Del && err.code == codes::TRY_AGAIN_LATER {
            return spool_del(
                env,
                conf,
                format!("weftd could not finish the DEL now ({})", err.msg),
            );
        }
        return Err(err);
    }
    if env.command != Command::Add {
        return Ok(None);
    }
    let ours: NeutralResult = serde_json::from_slice(&resp.body)
        .map_err(|_| bad_body(socket, resp.status, &resp.body))?;
    render_add(&ours, conf.cni_version, conf.prev_result.as_ref()).map(Some)
}

/// The exchange ended without a definite answer because the connection
/// was closed or reset (EOF before a full reply). Not a timeout: a weftd
/// that is slow but alive may still answer the runtime's retry.
fn cut_short(e: &HttpError) -> bool {
    match e {
        HttpError::Io(io) => !matches!(
            io.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        HttpError::Malformed(_) => true,
        _ => false,
    }
}

/// runtimeConfig.ips / args.cni.ips: at most one address per family (code
/// 7, the config's fault; CNI_ARGS IP is checked as it is parsed, code 4).
fn one_per_family(ips: Vec<std::net::IpAddr>) -> Result<Vec<std::net::IpAddr>, CniError> {
    for (i, a) in ips.iter().enumerate() {
        if let Some(b) = ips[..i].iter().find(|b| b.is_ipv4() == a.is_ipv4()) {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                format!("runtimeConfig.ips / args.cni.ips ask for {b} and {a}, two addresses of one family; a pod gets at most one IPv4 and one IPv6 address"),
            ));
        }
    }
    Ok(ips)
}

fn bad_body(socket: &str, status: u16, body: &[u8]) -> CniError {
    let shown: String = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    CniError::new(
        codes::INTERNAL,
        format!(
            "weftd at {socket} answered http {status} with a body weft-cni cannot read; check that weftd and weft-cni are the same version and see the weftd log (journalctl -u weftd)"
        ),
    )
    .with_details(shown)
}

/// weftd could not be reached at all: nothing was done on its side.
fn agent_unreachable(
    env: &CniEnv,
    conf: &NetConf,
    socket: &str,
    source: &io::Error,
) -> Result<Option<serde_json::Value>, CniError> {
    let hint = format!(
        "weftd is not reachable at {socket} ({source}); start weftd (systemctl start weftd) and retry"
    );
    match env.command {
        Command::Del => spool_del(env, conf, hint),
        Command::Status => Err(CniError::new(codes::NOT_AVAILABLE, hint)),
        _ => Err(CniError::new(codes::TRY_AGAIN_LATER, hint)),
    }
}

/// Records the DEL in the spool directory for weftd to replay, and reports
/// it done; `why` says why weftd did not do it now.
fn spool_del(
    env: &CniEnv,
    conf: &NetConf,
    why: String,
) -> Result<Option<serde_json::Value>, CniError> {
    let dir = conf
        .spool_dir
        .as_deref()
        .unwrap_or(weft_api::DEFAULT_SPOOL_DIR);
    let req = DelRequest {
        attachment: attachment(env),
        netns: env.netns.clone(),
        network: conf.name.clone(),
    };
    match spool::write(Path::new(dir), &req) {
        Ok(path) => {
            log_at!(Warn, "{why}; DEL spooled to {} for weftd to replay", path.display());
            Ok(None)
        }
        Err(e) => Err(CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("{why}; the DEL could not be spooled to {dir} either ({e}); make {dir} writable by the runtime"),
        )),
    }
}

/// (reply timeout, watchdog deadline). Debug builds let the integration
/// tests shrink them with `WEFT_CNI_TEST_TIMEOUTS_MS=<reply>,<deadline>`.
fn timeouts() -> (Duration, Duration) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("WEFT_CNI_TEST_TIMEOUTS_MS") {
        let ms: Vec<u64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
        if let [reply, deadline] = ms[..] {
            return (
                Duration::from_millis(reply),
                Duration::from_millis(deadline),
            );
        }
    }
    (REPLY_TIMEOUT, CONNECT_BUDGET + REPLY_TIMEOUT)
}

/// A hard deadline for the exchange with weftd: if it passes, print code 11
/// and exit, whatever the main thread is blocked on.
fn start_watchdog(socket: String, deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .stack_size(64 << 10)
        .spawn(move || {
            std::thread::sleep(deadline);
            if EMITTED.swap(true, Ordering::SeqCst) {
                return;
            }
            let mut e = CniError::new(
                codes::TRY_AGAIN_LATER,
                format!(
                    "weftd at {socket} did not answer within {deadline:?}; check weftd (journalctl -u weftd) and retry"
                ),
            );
            e.cni_version = error_version().as_str().to_string();
            log_at!(Error, "code {}: {}", e.code, e.msg);
            if let Ok(mut bytes) = serde_json::to_vec(&e) {
                bytes.push(b'\n');
                let mut out = io::stdout().lock();
                let _ = out.write_all(&bytes);
                let _ = out.flush();
            }
            std::process::exit(1);
        });
    // Without a watchdog the per-read timeouts still bound the exchange.
    drop(spawned);
}
