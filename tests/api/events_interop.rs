//! Events out are signed so that "any of that specification's libraries verifies them" (SPEC
//! "Events out"). Proven here against an independent implementation, the official
//! `standardwebhooks` package from PyPI, both ways: Python's `Webhook.verify` accepts what our
//! `sign` makes (and refuses it with the body changed), and our `events-receive` command
//! accepts what Python's `Webhook.sign` makes and prints the event. Beside them, the one
//! thing about `events-receive` only the binary shows: its exit code without a secret.
//!
//! Python is `LIPACHAT_PYTHON` (`.ci/run` points it at a venv holding the package) or
//! `python3`. Where it cannot import `standardwebhooks` the tests skip, saying why, unless
//! `LIPACHAT_REQUIRE_PYTHON_WEBHOOKS=1` (CI sets it) makes that a failure.

use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lipachat_relay::internals::sign_event;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{EVENT_TIMEOUT, binary, free_listen, run_to_exit, terminate_and_wait};

/// The Python to run; `python3` when unset.
const ENV_PYTHON: &str = "LIPACHAT_PYTHON";
/// Set (to anything but `0`) where these tests must run, as in CI.
const ENV_REQUIRE: &str = "LIPACHAT_REQUIRE_PYTHON_WEBHOOKS";

/// Reads `{"secret", "id", "timestamp", "signature", "body"}` on stdin; prints whether
/// `Webhook.verify` accepts the body as sent and with one byte changed.
const PYTHON_VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
given = json.load(sys.stdin)
headers = {"webhook-id": given["id"], "webhook-timestamp": given["timestamp"],
           "webhook-signature": given["signature"]}
hook = Webhook(given["secret"])
def verdict(body):
    try:
        hook.verify(body, headers)
        return "accepted"
    except WebhookVerificationError as error:
        return "refused: " + str(error)
tampered = given["body"].replace("READ", "SENT")
print(json.dumps({"as_sent": verdict(given["body"]), "tampered": verdict(tampered)}))
"#;

/// Reads `{"secret", "id", "body"}` on stdin; prints `Webhook.sign`'s headers for now.
const PYTHON_SIGN: &str = r#"
import json, sys
from datetime import datetime, timezone
from math import floor
from standardwebhooks.webhooks import Webhook
given = json.load(sys.stdin)
now = datetime.now(tz=timezone.utc)
signature = Webhook(given["secret"]).sign(given["id"], now, given["body"])
print(json.dumps({"timestamp": str(floor(now.timestamp())), "signature": signature}))
"#;

/// The Python that imports `standardwebhooks`, or `None` when the tests should skip.
fn python() -> Option<String> {
    let python = std::env::var(ENV_PYTHON).unwrap_or_else(|_| "python3".to_owned());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stdin(Stdio::null())
        .output();
    let reason = match probe {
        Ok(output) if output.status.success() => return Some(python),
        Ok(output) => format!(
            "{python} cannot import standardwebhooks ({})",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(error) => format!("cannot run {python} ({error})"),
    };
    let required = std::env::var(ENV_REQUIRE).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "{reason}, and {ENV_REQUIRE} is set");
    eprintln!(
        "SKIPPED: {reason}; set {ENV_PYTHON} to a Python with `pip install standardwebhooks` \
         (.ci/run does)"
    );
    None
}

/// Runs `script` with `input` on stdin; its stdout as JSON.
async fn run_python(python: &str, script: &str, input: &Value) -> Value {
    let mut child = tokio::process::Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The secret goes on stdin, not on a command line where `ps` would show it.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(EVENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("python did not finish")
        .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A fresh `whsec_` secret of 32 random bytes.
fn random_secret() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    format!("whsec_{}", BASE64.encode(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn python_standardwebhooks_verifies_our_signature_and_refuses_a_changed_body() {
    let Some(python) = python() else { return };
    let secret = random_secret();
    let id = format!("msg_{:032x}", fastrand::u128(..));
    let body = json!({"type": "message.status", "timestamp": "2026-01-01T00:00:00Z",
                      "data": {"messageId": "m-1", "status": "READ"}})
    .to_string();
    let timestamp = unix_now();
    let signature = sign_event(&secret, &id, timestamp, body.as_bytes())
        .expect("a whsec_ secret of random bytes");

    let verdict = run_python(
        &python,
        PYTHON_VERIFY,
        &json!({"secret": secret, "id": id, "timestamp": timestamp.to_string(),
                "signature": signature, "body": body}),
    )
    .await;

    assert_eq!(verdict["as_sent"], "accepted", "{verdict}");
    assert_eq!(
        verdict["tampered"], "refused: No matching signature found",
        "{verdict}"
    );
}

#[tokio::test]
async fn events_receive_accepts_what_python_standardwebhooks_signs() {
    let Some(python) = python() else { return };
    let secret = random_secret();
    let address = free_listen();
    let mut receiver = binary(&["events-receive", "--listen", &address])
        .env("RELAY_EVENTS_SECRET", &secret)
        .spawn()
        .expect("cannot run the binary");
    let mut stdout = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(receiver.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(EVENT_TIMEOUT, stderr.next_line())
        .await
        .expect("events-receive did not start")
        .unwrap()
        .expect("events-receive exited");
    assert_eq!(ready, format!("events-receive: listening on {address}"));

    let id = format!("msg_{:032x}", fastrand::u128(..));
    let body =
        r#"{"type":"message.received","timestamp":"2026-01-01T00:00:00Z","data":{"text":"jambo"}}"#;
    let signed = run_python(
        &python,
        PYTHON_SIGN,
        &json!({"secret": secret, "id": id, "body": body}),
    )
    .await;
    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{address}/events"))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", signed["timestamp"].as_str().unwrap())
            .header("webhook-signature", signed["signature"].as_str().unwrap())
            .body(body)
            .send()
    };

    let forged = post(r#"{"type":"message.received","data":{"text":"pesa"}}"#)
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let accepted = post(body).await.unwrap();
    assert_eq!(accepted.status(), 204);

    let line = tokio::time::timeout(EVENT_TIMEOUT, stdout.next_line())
        .await
        .expect("events-receive printed nothing")
        .unwrap()
        .expect("events-receive closed stdout");
    let printed: Value = serde_json::from_str(&line).unwrap();
    let timestamp: u64 = signed["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        printed,
        json!({"id": id, "timestamp": timestamp,
               "event": serde_json::from_str::<Value>(body).unwrap()})
    );

    let status = terminate_and_wait(&mut receiver).await;
    assert!(status.success(), "{status}");
    // Only the verified event went to stdout; the refusal went to stderr; no secret anywhere.
    let mut rest = String::new();
    let mut out = stdout.into_inner();
    out.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "", "more than one line on stdout");
    let mut errors = String::new();
    let mut err = stderr.into_inner();
    err.read_to_string(&mut errors).await.unwrap();
    assert!(
        errors.contains("refused") && errors.contains(&id),
        "{errors}"
    );
    let key = secret.trim_start_matches("whsec_");
    assert!(
        !errors.contains(key) && !line.contains(key),
        "the secret was printed"
    );
}

#[tokio::test]
async fn events_receive_without_a_usable_secret_exits_2_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[],
            "RELAY_EVENTS_SECRET: is required (or set RELAY_EVENTS_SECRET_FILE)",
        ),
        (
            &[("RELAY_EVENTS_SECRET", "not-a-whsec-secret-4a7f")],
            "RELAY_EVENTS_SECRET: must start with whsec_",
        ),
        (
            &[("RELAY_EVENTS_SECRET_FILE", "/nonexistent/secret")],
            "RELAY_EVENTS_SECRET_FILE: cannot read /nonexistent/secret",
        ),
    ];
    for (vars, expected) in cases {
        let mut command = binary(&["events-receive", "--listen", "127.0.0.1:0"]);
        command.envs(vars.iter().copied());
        let output = run_to_exit(command).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("lipachat-relay: {expected}")),
            "{vars:?}: {stderr}"
        );
        assert!(!stderr.contains("4a7f"), "the value was echoed: {stderr}");
    }
}
