//! Test harness: `spawn_app()` starts a scriptable fake gateway and the real relay app on
//! 127.0.0.1:0; `spawn_binary()` runs the built binary for exit codes, signals and logs.
//! The fake reports every request it receives on a channel and counts them, so "called exactly
//! once" is an assertion, and can hold requests at a gate so "in flight" is a state a test
//! waits for rather than a sleep.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use lipachat_relay::SEND_TYPES;
use lipachat_relay::{AppState, serve};
use lipachat_relay::{Config, KeyRequirement};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Upper bound for any single awaited event in a test.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`wait_until`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Waits until `reached()` says yes, looking again every few milliseconds, and fails naming
/// `what` after [`EVENT_TIMEOUT`]. Only for states with no event to await: a metric, the drain
/// flag, another process's readiness.
pub(crate) async fn wait_until<F, Fut>(what: impl std::fmt::Display, reached: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(EVENT_TIMEOUT, what, reached).await;
}

/// [`wait_until`] with its own time limit, for what takes longer by design (an event's
/// back-off, a takeover after 30 s of silence).
pub(crate) async fn wait_until_within<F, Fut>(
    limit: Duration,
    what: impl std::fmt::Display,
    mut reached: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let poll = async {
        while !reached().await {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    if tokio::time::timeout(limit, poll).await.is_err() {
        panic!("never reached within {limit:?}: {what}");
    }
}

/// POSTs `body` as JSON to `url` from a task of its own, so the request stays in flight while
/// the test goes on; the task's answer is the response.
pub(crate) fn spawn_post(
    client: &reqwest::Client,
    url: String,
    body: &Value,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    tokio::spawn(async move { request.send().await.expect("the relay did not answer") })
}

/// One scripted gateway answer.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub status: u16,
    /// `None`: a SENT envelope echoing the request's messageId.
    pub body: Option<String>,
    pub content_type: &'static str,
    pub delay: Duration,
    pub retry_after: Option<String>,
    /// Wait for a permit from the gateway's gate before answering.
    pub hold: bool,
}

impl Step {
    pub(crate) fn sent() -> Self {
        Self {
            status: 200,
            body: None,
            content_type: "application/json",
            delay: Duration::ZERO,
            retry_after: None,
            hold: false,
        }
    }

    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            body: Some(
                json!({"timestamp": "2026-11-25T00:00:00Z", "status": status,
                              "error": "scripted"})
                .to_string(),
            ),
            ..Self::sent()
        }
    }

    pub(crate) fn body(status: u16, content_type: &'static str, body: &str) -> Self {
        Self {
            status,
            body: Some(body.to_owned()),
            content_type,
            ..Self::sent()
        }
    }

    pub(crate) fn held() -> Self {
        Self {
            hold: true,
            ..Self::sent()
        }
    }

    pub(crate) fn delayed(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::sent()
        }
    }

    pub(crate) fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }
}

/// A request as the fake gateway received it.
#[derive(Debug)]
pub(crate) struct Received {
    pub method: Method,
    /// The gateway path it came to (`/api/v1/whatsapp/...`).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// When the gateway received it, for tests of spacing.
    pub at: Instant,
}

#[derive(Clone)]
struct FakeState {
    script: Arc<Mutex<VecDeque<Step>>>,
    default: Arc<Mutex<Step>>,
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    received: mpsc::UnboundedSender<Received>,
}

/// The scriptable fake gateway.
pub(crate) struct FakeGateway {
    pub address: SocketAddr,
    state: FakeState,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
}

impl FakeGateway {
    pub(crate) async fn start() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = FakeState {
            script: Arc::new(Mutex::new(VecDeque::new())),
            default: Arc::new(Mutex::new(Step::sent())),
            calls: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(0)),
            received: sender,
        };
        // Every send type's gateway path, as the relay's table lists them, and the template
        // listing (scripted like the sends: a test gives it a listing body).
        let router = SEND_TYPES
            .iter()
            .fold(Router::new(), |router, send_type| {
                router.route(send_type.gateway_path, post(answer))
            })
            .route("/api/v1/template/{number}", get(answer))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            address,
            state,
            received: tokio::sync::Mutex::new(receiver),
        }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Answers to give, in order, before falling back to the default.
    pub(crate) fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.state.script.lock().unwrap().extend(steps);
    }

    /// The answer once the script is used up.
    pub(crate) fn set_default(&self, step: Step) {
        *self.state.default.lock().unwrap() = step;
    }

    pub(crate) fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Lets `n` held requests answer.
    pub(crate) fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Every request received so far and not yet taken, without waiting.
    pub(crate) async fn take_received(&self) -> Vec<Received> {
        let mut receiver = self.received.lock().await;
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    /// The next request the gateway receives.
    pub(crate) async fn next_request(&self) -> Received {
        let mut receiver = self.received.lock().await;
        tokio::time::timeout(EVENT_TIMEOUT, receiver.recv())
            .await
            .expect("the gateway received no request in time")
            .expect("the fake gateway stopped")
    }
}

async fn answer(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    state.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message_id = body["messageId"].clone();
    let step = {
        let next = state.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| state.default.lock().unwrap().clone())
    };
    let _ = state.received.send(Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at,
    });
    if step.hold {
        state.gate.acquire().await.unwrap().forget();
    }
    if !step.delay.is_zero() {
        tokio::time::sleep(step.delay).await;
    }
    let text = step.body.unwrap_or_else(|| {
        json!({"timestamp": "2026-11-25T00:00:00Z",
               "data": {"messageId": message_id, "waId": "wamid.TEST", "status": "SENT",
                        "statusDesc": "sent"},
               "status": "success", "message": "", "errors": null})
        .to_string()
    });
    let mut response = (
        StatusCode::from_u16(step.status).unwrap(),
        [("content-type", step.content_type)],
        text,
    )
        .into_response();
    if let Some(value) = step.retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}

/// A relay running in this process against a fake gateway.
pub(crate) struct TestApp {
    pub base_url: String,
    pub gateway: FakeGateway,
    pub client: reqwest::Client,
    pub api_key: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A random key per test, so a leak check cannot pass by accident.
pub(crate) fn random_key() -> String {
    format!("test-key-{:032x}", fastrand::u128(..))
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the relay with extra environment variables (as `Config::from_vars` reads them).
pub(crate) async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    let gateway = FakeGateway::start().await;
    let api_key = random_key();
    let base_url = gateway.base_url();
    let mut all: Vec<(String, String)> = vec![
        ("LIPACHAT_API_KEY".into(), api_key.clone()),
        ("LIPACHAT_BASE_URL".into(), base_url),
        ("RELAY_LISTEN".into(), "127.0.0.1:0".into()),
    ];
    all.retain(|(name, _)| !vars.iter().any(|(k, _)| k == name));
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = Config::from_vars(all, KeyRequirement::Required).unwrap();
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state.clone(), async {
        let _ = signal.await;
    }));
    TestApp {
        base_url: format!("http://{address}"),
        gateway,
        client: reqwest::Client::new(),
        api_key,
        state,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// A valid request body with the given messageId.
pub(crate) fn media_body(message_id: &str) -> Value {
    json!({
        "messageId": message_id,
        "mediaType": "IMAGE",
        "mediaUrl": "https://cdn.example.com/receipt.png",
        "caption": "Your receipt",
        "from": "254110090747",
        "to": "254712345678"
    })
}

impl TestApp {
    /// The relay's URL of `path`.
    pub(crate) fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub(crate) async fn post_media(&self, body: &Value) -> reqwest::Response {
        self.post_raw("/media", "application/json", body.to_string())
            .await
    }

    /// POSTs JSON to a relay path.
    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    /// POSTs a media send with `headers` besides.
    pub(crate) async fn post_media_with(
        &self,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        post_json_to(&self.client, &self.url_of("/media"), headers, body).await
    }

    pub(crate) async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> reqwest::Response {
        self.client
            .post(self.url_of(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the relay did not answer")
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        request(&self.client, Method::GET, &self.url_of(path)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> reqwest::Response {
        request(&self.client, Method::DELETE, &self.url_of(path)).await
    }

    /// Triggers the drain, as SIGTERM would, and waits for `serve` to return.
    pub(crate) async fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(EVENT_TIMEOUT, server)
                .await
                .expect("serve did not return in time")
                .unwrap()
                .unwrap();
        }
    }

    /// Starts the drain without waiting for it.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    pub(crate) async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// Waits until `/metrics` has `line`.
    pub(crate) async fn metric_reaches(&self, line: &str) {
        wait_until(format!("the metrics show {line}"), || async {
            self.metrics().await.contains(line)
        })
        .await;
    }

    /// POSTs a media send with this `messageId` from a task of its own ([`spawn_post`]).
    pub(crate) fn spawn_post_media(
        &self,
        message_id: &str,
    ) -> tokio::task::JoinHandle<reqwest::Response> {
        spawn_post(
            &self.client,
            format!("{}/media", self.base_url),
            &media_body(message_id),
        )
    }
}

/// Reads the relay's envelope and checks its shape.
pub(crate) async fn envelope(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.expect("the answer is not JSON");
    assert_eq!(body["status"], "error", "{body}");
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["timestamp"].as_str().is_some_and(|t| t.contains('T')),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// The fields named in an envelope's `errors`.
pub(crate) fn error_fields(envelope: &Value) -> Vec<String> {
    envelope["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A loopback port nobody listens on (bound, then released).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The built binary, run with exactly these variables, stdout and stderr piped.
pub(crate) fn spawn_binary(args: &[&str], vars: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = binary(args);
    command.envs(vars.iter().copied());
    command.spawn().expect("cannot run the binary")
}

/// The built binary with an empty environment, stdout and stderr piped, killed when dropped.
/// Add variables (any bytes: `std::os::unix::ffi::OsStrExt`) with `.env`, then `.spawn()`.
pub(crate) fn binary(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lipachat-relay"));
    command.args(args);
    piped(&mut command);
    command
}

/// The built binary started by `sh -c '<ulimit> && exec <binary> <args>'`, under that limit.
pub(crate) fn binary_under(ulimit: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("{ulimit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_lipachat-relay"))
        .args(args);
    piped(&mut command);
    command
}

fn piped(command: &mut tokio::process::Command) {
    command
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
}

/// Everything a child that has exited wrote to its stdout, as text.
pub(crate) async fn stdout_text(child: &mut tokio::process::Child) -> String {
    read_pipe(child.stdout.take()).await
}

/// Everything a child that has exited wrote to its stderr, as text.
pub(crate) async fn stderr_text(child: &mut tokio::process::Child) -> String {
    read_pipe(child.stderr.take()).await
}

async fn read_pipe(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    pipe.expect("the pipe was taken already")
        .read_to_string(&mut text)
        .await
        .unwrap();
    text
}

/// The relay's log lines, as JSON, read from its stdout once it has exited.
pub(crate) async fn log_lines(child: &mut tokio::process::Child) -> Vec<Value> {
    stdout_text(child)
        .await
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

pub(crate) fn log_line<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| line["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
}

/// Waits until `url` answers with `status`, polling (used only to await start-up and
/// readiness changes of a separate process, which has no event to subscribe to).
pub(crate) async fn wait_for_status(url: &str, status: u16) {
    let client = reqwest::Client::new();
    wait_until(format!("{url} answers {status}"), || async {
        client
            .get(url)
            .send()
            .await
            .is_ok_and(|response| response.status().as_u16() == status)
    })
    .await;
}

/// Sends SIGTERM to a child process.
pub(crate) fn terminate(child: &tokio::process::Child) {
    signal(child, "-TERM");
}

/// `kill <signal> <pid>` of a child that is still running.
fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the process has exited already");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (up to [`EVENT_TIMEOUT`]) until a child has exited; how it exited.
pub(crate) async fn exited(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(EVENT_TIMEOUT, child.wait())
        .await
        .expect("the process did not exit in time")
        .unwrap()
}

/// SIGTERM to a child, then [`exited`].
pub(crate) async fn terminate_and_wait(
    child: &mut tokio::process::Child,
) -> std::process::ExitStatus {
    terminate(child);
    exited(child).await
}

/// Runs `command` until it exits (up to [`EVENT_TIMEOUT`]); its status, stdout and stderr.
pub(crate) async fn run_to_exit(mut command: tokio::process::Command) -> std::process::Output {
    let child = command.spawn().expect("cannot run the binary");
    tokio::time::timeout(EVENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the binary did not exit")
        .unwrap()
}

/// `127.0.0.1:<port>` on a [`free_port`].
pub(crate) fn free_listen() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A relay process: the built binary serving on `url`.
pub(crate) struct Served {
    pub child: tokio::process::Child,
    /// `http://<RELAY_LISTEN>`.
    pub url: String,
    pub client: reqwest::Client,
}

/// Runs `command` (the binary's `serve`, as [`binary`] or [`binary_under`] make it) with
/// `RELAY_LISTEN` set to `listen`, and waits until its `/healthz` answers 200.
pub(crate) async fn start_serving(mut command: tokio::process::Command, listen: &str) -> Served {
    command.env("RELAY_LISTEN", listen);
    let child = command.spawn().expect("cannot run the binary");
    let url = format!("http://{listen}");
    wait_for_status(&format!("{url}/healthz"), 200).await;
    Served {
        child,
        url,
        client: reqwest::Client::new(),
    }
}

/// `serve` on `listen` with exactly these variables besides, once `/healthz` answers.
pub(crate) async fn serve_binary_on(listen: &str, vars: &[(&str, &str)]) -> Served {
    let mut command = binary(&["serve"]);
    command.envs(vars.iter().copied());
    start_serving(command, listen).await
}

/// `serve` on a free port against the gateway at `gateway` with the API key `key`, and with
/// `vars` besides, once `/healthz` answers.
pub(crate) async fn serve_against(gateway: &str, key: &str, vars: &[(&str, &str)]) -> Served {
    let mut all = vec![("LIPACHAT_API_KEY", key), ("LIPACHAT_BASE_URL", gateway)];
    all.extend_from_slice(vars);
    serve_binary_on(&free_listen(), &all).await
}

impl Served {
    /// POSTs `body` as JSON to `path`, with `headers` besides.
    pub(crate) async fn post_json_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        post_json_to(&self.client, &format!("{}{path}", self.url), headers, body).await
    }

    /// POSTs a media send.
    pub(crate) async fn post_media(&self, body: &Value) -> reqwest::Response {
        self.post_json_with("/media", &[], body).await
    }
}

/// A request with no body to `url`; the answer.
pub(crate) async fn request(
    client: &reqwest::Client,
    method: Method,
    url: &str,
) -> reqwest::Response {
    client
        .request(method, url)
        .send()
        .await
        .expect("the relay did not answer")
}

/// POSTs `body` as JSON to `url` with `headers` besides; the answer.
pub(crate) async fn post_json_to(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    let mut request = client.post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(body.to_string())
        .send()
        .await
        .expect("the relay did not answer")
}

/// The mock gateway on a loopback port, accepting `key`.
pub(crate) async fn start_mock(key: &str) -> String {
    let router = lipachat_relay::mock::router(lipachat_relay::mock::Accept::Key(
        lipachat_relay::ApiKey::new(key),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// Reads and drops a child's stdout and stderr, so a chatty relay that nobody reads never
/// blocks on a full pipe.
pub(crate) fn drain_output(child: &mut tokio::process::Child) {
    let pipes: [Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>; 2] = [
        child.stdout.take().map(|pipe| Box::new(pipe) as _),
        child.stderr.take().map(|pipe| Box::new(pipe) as _),
    ];
    for mut pipe in pipes.into_iter().flatten() {
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = pipe.read_to_end(&mut sink).await;
        });
    }
}

/// `kill -9` of a child: no drain, nothing released; waits until it has died of it.
pub(crate) async fn kill_9(child: &mut tokio::process::Child) {
    signal(child, "-9");
    let exit = exited(child).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9)
    );
}
