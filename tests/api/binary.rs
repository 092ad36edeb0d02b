//! The binary as users run it: exit codes for bad configuration, an environment that is not
//! all UTF-8, SIGTERM drain, the file-descriptor limit, and logs that never carry the secret or
//! a whole phone number.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;

use crate::helpers::{
    FakeGateway, Step, binary, binary_under, exited, free_listen, free_port, log_line, log_lines,
    media_body, random_key, run_to_exit, serve_against, spawn_binary, spawn_post, start_serving,
    stderr_text, stdout_text, terminate, terminate_and_wait, wait_for_status,
};

async fn exit_of(vars: &[(&str, &str)]) -> (i32, String) {
    let mut command = binary(&["serve"]);
    command.envs(vars.iter().copied());
    let output = run_to_exit(command).await;
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    let key = random_key();
    let mut cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "LIPACHAT_API_KEY"),
        (vec![("LIPACHAT_API_KEY", "")], "LIPACHAT_API_KEY"),
        (
            vec![("LIPACHAT_API_KEY_FILE", "/nonexistent/secret")],
            "LIPACHAT_API_KEY_FILE",
        ),
    ];
    // Beside a good key, one bad variable, which the message names.
    let bad = [
        ("LIPACHAT_API_KEY_FILE", "/x"),
        ("LIPACHAT_BASE_URL", "not a url"),
        ("RELAY_LISTEN", "nowhere"),
        ("RELAY_MAX_ATTEMPTS", "11"),
        ("RELAY_DEADLINE_MS", "0"),
        ("RELAY_MAX_BODY_BYTES", "lots"),
        ("RELAY_LOG_FORMAT", "xml"),
        ("LIPACHAT_DEFAULT_FROM", "1"),
        ("RELAY_HEADER_TIMEOUT_MS", "0"),
        ("RELAY_BODY_TIMEOUT_MS", "0"),
        ("RELAY_IDLE_TIMEOUT_SECS", "0"),
        ("RELAY_MAX_CONNECTIONS", "0"),
    ];
    cases.extend(bad.map(|(name, value)| {
        (
            vec![("LIPACHAT_API_KEY", key.as_str()), (name, value)],
            name,
        )
    }));
    for (vars, variable) in cases {
        let (code, stderr) = exit_of(&vars).await;
        assert_eq!(code, 2, "{vars:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("lipachat-relay: {variable}")),
            "{stderr}"
        );
        assert!(!stderr.contains(&key), "the key leaked: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn healthcheck_exits_0_when_healthy_and_1_when_not() {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}/healthz");
    let probe = |url: String| async move {
        let child = spawn_binary(&["healthcheck", "--url", &url], &[]);
        let output = child.wait_with_output().await.unwrap();
        output.status.code()
    };
    assert_eq!(probe(url.clone()).await, Some(1));
    let _relay = spawn_binary(&["serve", "--mock-upstream"], &[("RELAY_LISTEN", &listen)]);
    wait_for_status(&url, 200).await;
    assert_eq!(probe(url).await, Some(0));
}

#[tokio::test]
async fn sigterm_lets_the_send_under_way_finish_then_exits_0() {
    let gateway = FakeGateway::start().await;
    gateway.script([Step::held()]);
    let mut relay = serve_against(
        &gateway.base_url(),
        &random_key(),
        &[("RELAY_SHUTDOWN_GRACE_SECS", "10")],
    )
    .await;
    let under_way = spawn_post(
        &relay.client,
        format!("{}/media", relay.url),
        &media_body("term-1"),
    );
    gateway.next_request().await;
    terminate(&relay.child);
    wait_for_status(&format!("{}/readyz", relay.url), 503).await;
    let refused = relay.post_media(&media_body("term-2")).await;
    assert_eq!(refused.status(), 503);

    gateway.release(1);
    assert_eq!(under_way.await.unwrap().status(), 200);
    let status = exited(&mut relay.child).await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(gateway.calls(), 1);
}

#[tokio::test]
async fn logs_never_carry_the_key_or_a_whole_phone_number() {
    let gateway = FakeGateway::start().await;
    let unauthorised = r#"{"timestamp":"t","data":null,"status":"success","message":"Invalid credentials","errors":null}"#;
    gateway.script([
        Step::sent(),
        Step::body(401, "application/json", unauthorised),
        Step::delayed(Duration::from_secs(3)),
    ]);
    let key = random_key();
    let mut relay = serve_against(
        &gateway.base_url(),
        &key,
        &[
            ("RELAY_MAX_ATTEMPTS", "1"),
            ("RELAY_ATTEMPT_TIMEOUT_MS", "200"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let mut invalid = media_body("log-2");
    invalid["mediaUrl"] = json!("http://insecure.example/a.png");
    let expected = [
        (media_body("log-1"), 200),
        (invalid, 400),
        (media_body("log-3"), 401),
        (media_body("log-4"), 504),
        (media_body("log-1"), 200),
    ];
    for (body, status) in expected {
        let response = relay
            .post_json_with("/media", &[("apiKey", &key)], &body)
            .await;
        assert_eq!(response.status().as_u16(), status);
        assert!(!response.text().await.unwrap().contains(&key));
    }
    terminate_and_wait(&mut relay.child).await;
    let all = stdout_text(&mut relay.child).await + &stderr_text(&mut relay.child).await;
    assert!(
        all.contains("\"outcome\":\"replayed\""),
        "no request lines:\n{all}"
    );
    assert!(!all.contains(&key), "the key leaked into the logs");
    assert!(!all.contains("254712345678"), "a whole phone number leaked");
    assert!(!all.contains("254110090747"), "a whole phone number leaked");
    assert!(all.contains("2547******78"), "the masked number is missing");
    assert!(!all.contains("Your receipt"), "a caption leaked");
    assert!(!all.contains("cdn.example.com"), "a media URL leaked");
}

/// Runs `command`, which must exit 2 with one line on stderr that starts with `start`; none
/// of `never` (bytes, and what they are) may be in its stdout or stderr. The output is checked
/// as bytes, for bytes that are not UTF-8. `case` names the run in a failure.
async fn assert_exits_2_without(
    command: tokio::process::Command,
    case: &str,
    start: &str,
    never: &[(&[u8], &str)],
) {
    let output = run_to_exit(command).await;
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{case}: {text}");
    assert_eq!(text.lines().count(), 1, "{case}: {text}");
    assert!(text.starts_with(start), "{case}: {text}");
    for output in [&output.stdout, &output.stderr] {
        for (bytes, what) in never {
            assert!(!contains(output, bytes), "{case}: {what} leaked: {text}");
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A variable the relay does not read may hold any bytes: `env::vars()` panicked on it.
#[tokio::test]
async fn an_unrelated_variable_that_is_not_utf8_stops_neither_serve_nor_the_mock() {
    let mut relay = binary(&["serve", "--mock-upstream"]);
    relay
        .env("X", OsStr::from_bytes(b"\xff"))
        .env(OsStr::from_bytes(b"Y\xfe"), "1");
    let _relay = start_serving(relay, &free_listen()).await;

    let mock_listen = format!("127.0.0.1:{}", free_port());
    let mut mock = binary(&["mock-gateway"]);
    mock.env("MOCK_LISTEN", &mock_listen)
        .env("X", OsStr::from_bytes(b"\xff"));
    let _mock = mock.spawn().unwrap();
    wait_for_status(&format!("http://{mock_listen}/mock/sends"), 200).await;
}

#[tokio::test]
async fn a_key_that_is_not_utf8_exits_2_naming_it_without_its_bytes() {
    for command in ["serve", "mock-gateway"] {
        let mut relay = binary(&[command]);
        relay
            .env("LIPACHAT_API_KEY", OsStr::from_bytes(b"se\xffcret"))
            .env("MOCK_LISTEN", format!("127.0.0.1:{}", free_port()));
        assert_exits_2_without(
            relay,
            command,
            "lipachat-relay: LIPACHAT_API_KEY: is not valid UTF-8",
            &[
                (b"se\xffcret", "the key"),
                (b"cret", "part of the key"),
                (b"panicked", "a panic"),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn a_base_url_with_credentials_exits_2_without_them() {
    let mut relay = binary(&["serve"]);
    relay.env("LIPACHAT_API_KEY", random_key()).env(
        "LIPACHAT_BASE_URL",
        "http://relay-user:pw-s3cr3t@gateway.example",
    );
    assert_exits_2_without(
        relay,
        "serve",
        "lipachat-relay: LIPACHAT_BASE_URL: ",
        &[(b"pw-s3cr3t", "the password"), (b"relay-user", "the user")],
    )
    .await;
}

/// Holds `n` connections that never send a byte, then checks that /healthz still answers.
async fn healthz_answers_past_idle_connections(listen: &str, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(TcpStream::connect(listen).await.unwrap());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .expect("/healthz starved behind idle connections");
    assert_eq!(health.status(), 200);
    idle
}

/// `serve --mock-upstream` under `ulimit`: /healthz answers past 400 idle connections
/// ([`healthz_answers_past_idle_connections`]), and SIGTERM stops it with 0. Its log lines.
async fn idle_connections_under(ulimit: &str) -> Vec<serde_json::Value> {
    let listen = free_listen();
    let mut relay =
        start_serving(binary_under(ulimit, &["serve", "--mock-upstream"]), &listen).await;
    let idle = healthz_answers_past_idle_connections(&listen, 400).await;
    let status = terminate_and_wait(&mut relay.child).await;
    assert_eq!(status.code(), Some(0));
    drop(idle);
    log_lines(&mut relay.child).await
}

/// Under `ulimit -Sn 256` the relay raises its soft limit to the hard one and says so; it
/// then holds more idle connections than 256 descriptors would allow and /healthz answers.
#[tokio::test]
async fn a_low_soft_fd_limit_is_raised_to_the_hard_one() {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    assert!(
        hard > 1024,
        "this test needs a hard limit above 1024, not {hard}"
    );
    let lines = idle_connections_under("ulimit -Sn 256").await;
    let starting = log_line(&lines, "starting");
    assert_eq!(starting["fd_limit_raised_from"], 256, "{starting}");
    assert_eq!(starting["fd_limit"], hard, "{starting}");
    assert_eq!(starting["max_connections"], 4096, "{starting}");
}

/// The issue's third finding, at the process level: under `ulimit -n 1024` about 1014 idle
/// connections stopped the accepting and /healthz timed out. Under a hard limit of 256 the
/// relay caps its connections below it, sheds idle ones when more come, logs it, and /healthz
/// answers behind 400 idle connections.
#[tokio::test]
async fn a_low_hard_fd_limit_caps_connections_and_healthz_still_answers() {
    let lines = idle_connections_under("ulimit -n 256").await;
    let starting = log_line(&lines, "starting");
    assert_eq!(starting["fd_limit"], 256, "{starting}");
    assert!(starting["fd_limit_raised_from"].is_null(), "{starting}");
    // 256 less a reserve of at most half of it.
    assert_eq!(starting["max_connections"], 128, "{starting}");
    let capped = log_line(
        &lines,
        "RELAY_MAX_CONNECTIONS capped below the file-descriptor limit, leaving room for \
         gateway connections and files",
    );
    assert_eq!(capped["level"], "WARN");
    let limit = lines
        .iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("connection limit reached"))
        })
        .collect::<Vec<_>>();
    // Rate-limited: one line however many times the limit was met.
    assert_eq!(limit.len(), 1, "{lines:#?}");
    assert_eq!(limit[0]["max_connections"], 128);
}

/// Text logs written to a pipe (or a file) carry no colour codes.
#[tokio::test]
async fn text_logs_have_no_colours_outside_a_terminal() {
    let mut command = binary(&["serve", "--mock-upstream"]);
    command.env("RELAY_LOG_FORMAT", "text");
    let mut relay = start_serving(command, &free_listen()).await;
    terminate_and_wait(&mut relay.child).await;
    let text = stdout_text(&mut relay.child).await;
    assert!(text.contains("INFO starting"), "{text}");
    assert!(!text.contains('\x1b'), "escape codes in a pipe:\n{text}");
}
