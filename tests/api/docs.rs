//! The documents against the code they describe: every table that mirrors code names exactly
//! what the code has, every relative link resolves, and every command in the README is one CI
//! runs (`cargo test`) or one this module runs (the send and its replay on the mock).
//!
//! Files are read from the crate root (`CARGO_MANIFEST_DIR`), so the checks see the checkout.
//! The Markdown reading here is deliberately small: fenced code blocks, pipe tables, `#`
//! headings and inline `[text](target)` links, which is all these documents use.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use lipachat_relay::SEND_TYPES;
use lipachat_relay::variables::{VARIABLES, VARS};

use crate::helpers::{
    EVENT_TIMEOUT, binary, free_listen, spawn_app, start_serving, terminate, terminate_and_wait,
};

/// The README's sections whose shell blocks hold its commands.
const SET_UP_HEADING: &str = "Run it, test it";
const WALKTHROUGH_HEADING: &str = "Send a message, then send it again";
const LIFECYCLE_HEADING: &str = "What happened after SENT";
/// The address the README's commands talk to (`RELAY_LISTEN`'s default).
const README_ADDRESS: &str = "localhost:8080";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

/// README.md, BENCHMARKS.md and every page under docs/, relative to the crate root.
fn documents() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ is missing")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "docs/ has no pages");
    let mut all = vec!["README.md".to_owned(), "BENCHMARKS.md".to_owned()];
    all.extend(pages);
    all
}

/// A fenced code block: its info string, the heading it sits under, its lines.
struct CodeBlock {
    language: String,
    heading: String,
    lines: Vec<String>,
}

/// A document split into the lines outside fenced code blocks and the blocks themselves.
struct Markdown {
    prose: Vec<String>,
    blocks: Vec<CodeBlock>,
}

fn parse(text: &str) -> Markdown {
    let mut prose = Vec::new();
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut open: Option<CodeBlock> = None;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            Some(block) if fence => blocks.push(block),
            Some(mut block) => {
                block.lines.push(line.to_owned());
                open = Some(block);
            }
            None if fence => {
                open = Some(CodeBlock {
                    language: line.trim_start().trim_start_matches('`').trim().to_owned(),
                    heading: heading.clone(),
                    lines: Vec::new(),
                });
            }
            None => {
                if line.starts_with('#') {
                    heading = line.trim_start_matches('#').trim().to_owned();
                }
                prose.push(line.to_owned());
            }
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    Markdown { prose, blocks }
}

/// The body rows of the pipe table whose header row starts with `| first_header |`, as cells.
fn table(text: &str, first_header: &str) -> Vec<Vec<String>> {
    let prose = parse(text).prose;
    let header = format!("| {first_header} |");
    let start = prose
        .iter()
        .position(|line| line.starts_with(&header))
        .unwrap_or_else(|| panic!("no table with a {first_header:?} column"));
    let rows: Vec<Vec<String>> = prose[start + 2..]
        .iter()
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "the {first_header:?} table has no rows");
    rows
}

/// The text of a cell's first code span: `` `RELAY_LISTEN` `` → `RELAY_LISTEN`.
fn code(cell: &str) -> String {
    cell.split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no `code` in the cell {cell:?}"))
        .to_owned()
}

/// Fails naming what only one side has.
fn assert_same<T: Ord + Debug>(documented: &BTreeSet<T>, code: &BTreeSet<T>, what: &str) {
    let missing: Vec<&T> = code.difference(documented).collect();
    let extra: Vec<&T> = documented.difference(code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, not in the code {extra:?}"
    );
}

#[test]
fn configuration_table_lists_every_variable_once() {
    let names: Vec<String> = table(&read("docs/configuration.md"), "variable")
        .iter()
        .map(|row| code(&row[0]))
        .collect();
    let documented: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(documented.len(), names.len(), "a variable has two rows");
    let variables: BTreeSet<&str> = VARIABLES.iter().copied().collect();
    assert_same(
        &documented,
        &variables,
        "docs/configuration.md against config::VARIABLES",
    );
}

/// A variable's default as the docs write it: in backticks, or `—` for none.
fn documented_default(name: &str) -> String {
    let default = VARS
        .iter()
        .find(|var| var.name == name)
        .and_then(|var| var.default);
    default.map_or_else(|| "—".to_owned(), |value| format!("`{value}`"))
}

#[test]
fn configuration_table_gives_each_variable_its_default() {
    let rows = table(&read("docs/configuration.md"), "variable");
    let wrong: Vec<String> = rows
        .iter()
        .filter(|row| row[1].trim() != documented_default(&code(&row[0])))
        .map(|row| {
            format!(
                "{}: documented {}, code {}",
                code(&row[0]),
                row[1].trim(),
                documented_default(&code(&row[0]))
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/configuration.md defaults: {wrong:?}"
    );
}

#[test]
fn env_example_sets_only_defaults() {
    // Uncommented `NAME=value` lines are what a copied .env sets: each must be the default.
    let wrong: Vec<String> = read(".env.example")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(name, value)| {
            let default = VARS
                .iter()
                .find(|var| var.name == *name)
                .and_then(|var| var.default);
            default != Some(*value)
        })
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(
        wrong.is_empty(),
        ".env.example sets values other than the defaults: {wrong:?}"
    );
}

#[test]
fn env_example_lists_every_variable() {
    let text = read(".env.example");
    // `NAME=value`, commented out or not; prose comments have spaces or lower case before `=`.
    let listed: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.trim_start_matches('#').trim().split_once('='))
        .map(|(name, _)| name)
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let variables: BTreeSet<&str> = VARIABLES.iter().copied().collect();
    assert_same(
        &listed,
        &variables,
        ".env.example against config::VARIABLES",
    );
}

#[tokio::test]
async fn metrics_table_names_every_family_served() {
    let app = spawn_app().await;
    let exposition = app.metrics().await;
    // OpenMetrics names a family without the suffix its samples carry.
    let served: BTreeSet<String> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|family| match family.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, "info")) => format!("{name}_info"),
            Some((name, _)) => name.to_owned(),
            None => panic!("a TYPE line without a type: {family:?}"),
        })
        .collect();
    assert!(
        served.contains("lipachat_relay_requests_total"),
        "no request counter in {exposition}"
    );
    let documented: BTreeSet<String> = table(&read("docs/operations.md"), "metric")
        .iter()
        .map(|row| {
            let name = code(&row[0]);
            name.split('{').next().unwrap_or_default().to_owned()
        })
        .collect();
    assert_same(
        &documented,
        &served,
        "docs/operations.md's metrics against GET /metrics",
    );
}

#[test]
fn send_types_table_lists_every_send_type() {
    // `POST /media` → `/media`.
    let path = |cell: &str| {
        let route = code(cell);
        route
            .split_once(' ')
            .map_or(route.clone(), |(_, path)| path.to_owned())
    };
    let documented: BTreeSet<(String, String, String)> = table(&read("README.md"), "relay path")
        .iter()
        .map(|row| (path(&row[0]), path(&row[1]), code(&row[2])))
        .collect();
    let send_types: BTreeSet<(String, String, String)> = SEND_TYPES
        .iter()
        .map(|send| {
            (
                send.path.to_owned(),
                send.gateway_path.to_owned(),
                send.kind.name().to_owned(),
            )
        })
        .collect();
    assert_same(
        &documented,
        &send_types,
        "README.md's send types (path, alias, type) against sends::SEND_TYPES",
    );
}

/// The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces to
/// hyphens, `-1`, `-2`… on repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for line in parse(text).prose {
        if !line.starts_with('#') {
            continue;
        }
        let slug: String = line
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut repeat = 0;
        while anchors.contains(&anchor) {
            repeat += 1;
            anchor = format!("{slug}-{repeat}");
        }
        anchors.insert(anchor);
    }
    anchors
}

/// The targets of the inline links outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let prose = parse(text).prose.join("\n");
    // Code spans may run across a line break, so strip them from the whole text at once.
    let outside_code: String = prose.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    outside_code
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
        .collect()
}

#[test]
fn relative_links_resolve() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for document in documents() {
        let text = read(&document);
        let here = root().join(&document);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file: PathBuf = if path.is_empty() {
                here.clone()
            } else {
                here.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{document}: {target}: no such file"));
            } else if !anchor.is_empty()
                && file.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&file).unwrap()).contains(anchor)
            {
                broken.push(format!("{document}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 20,
        "only {checked} links found: is the link reader broken?"
    );
}

#[test]
fn readme_maps_every_page_of_docs() {
    let linked: BTreeSet<String> = links(&read("README.md")).into_iter().collect();
    let unlinked: Vec<String> = documents()
        .into_iter()
        .filter(|page| page != "README.md" && !linked.contains(page))
        .collect();
    assert!(unlinked.is_empty(), "README.md does not link {unlinked:?}");
}

#[test]
fn benchmark_tables_live_only_in_benchmarks_md() {
    let is_bench_row =
        |line: &String| line.starts_with('|') && (line.contains("req/s") || line.contains("µs"));
    assert!(
        parse(&read("BENCHMARKS.md")).prose.iter().any(is_bench_row),
        "BENCHMARKS.md has no benchmark table"
    );
    for document in documents().iter().filter(|d| *d != "BENCHMARKS.md") {
        let rows: Vec<String> = parse(&read(document))
            .prose
            .into_iter()
            .filter(is_bench_row)
            .collect();
        assert!(rows.is_empty(), "{document} has benchmark rows: {rows:#?}");
    }
}

/// The commands of a shell block: its lines without trailing `# comments`, blank lines dropped.
fn commands(block: &CodeBlock) -> Vec<String> {
    block
        .lines
        .iter()
        .map(|line| {
            line.split(" #")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .filter(|line| !line.is_empty())
        .collect()
}

/// The README's shell blocks: the set-up commands, the walkthrough, and the after-SENT
/// walkthrough.
fn readme_blocks() -> Vec<CodeBlock> {
    let blocks: Vec<CodeBlock> = parse(&read("README.md"))
        .blocks
        .into_iter()
        .filter(|block| matches!(block.language.as_str(), "sh" | "bash" | "shell" | "console"))
        .collect();
    let headings: Vec<&str> = blocks.iter().map(|block| block.heading.as_str()).collect();
    assert_eq!(
        headings,
        [SET_UP_HEADING, WALKTHROUGH_HEADING, LIFECYCLE_HEADING],
        "README.md's commands are the set-up pair (CI runs them) and the two walkthroughs \
         (this module runs them); other commands belong in docs/"
    );
    blocks
}

/// The set-up block and the first walkthrough.
fn readme_shell_blocks() -> (CodeBlock, CodeBlock) {
    let mut blocks = readme_blocks().into_iter();
    let set_up = blocks.next().unwrap();
    (set_up, blocks.next().unwrap())
}

/// Runs a README block with bash, its `localhost:8080` pointed at `listen`; its stdout.
async fn run_block(block: &CodeBlock, listen: &str) -> String {
    let script = block.lines.join("\n");
    assert!(
        script.contains(README_ADDRESS),
        "the walkthrough does not talk to {README_ADDRESS}"
    );
    let script = script.replace(README_ADDRESS, listen);
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("bash")
            .args(["-euc", &script])
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the walkthrough took over 30 s")
    .expect("the walkthrough needs bash and curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn readme_set_up_commands_are_the_ones_ci_runs() {
    let (set_up, _) = readme_shell_blocks();
    let commands = commands(&set_up);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0].starts_with("cargo run ") && commands[0].contains(" -- serve --mock-upstream"),
        "the run command must start the relay on the mock: {:?}",
        commands[0]
    );
    assert_eq!(commands[1], "cargo test");
    // The CI step runs the README's test command verbatim (a hook greps for it too).
    assert!(
        read(".ci/run")
            .lines()
            .any(|line| line.trim() == "cargo test"),
        ".ci/run does not run `cargo test`"
    );
}

#[tokio::test]
async fn readme_walkthrough_sends_then_replays_on_the_mock() {
    let (set_up, walkthrough) = readme_shell_blocks();
    let run = commands(&set_up).remove(0);
    let (_, arguments) = run.split_once(" -- ").expect("no `--` in the run command");
    let arguments: Vec<&str> = arguments.split_whitespace().collect();

    // The README's run command, on a free port rather than 8080, which may be taken here.
    let listen = free_listen();
    let mut relay = start_serving(binary(&arguments), &listen).await;

    let stdout = run_block(&walkthrough, &listen).await;

    // The send, then the replay: headers and the same body.
    let (sent, replayed) = stdout
        .split_once("HTTP/1.1 ")
        .unwrap_or_else(|| panic!("the second curl printed no headers: {stdout}"));
    assert!(sent.contains(r#""status":"SENT""#), "{stdout}");
    assert!(replayed.starts_with("200 "), "{stdout}");
    assert!(
        replayed.lines().any(|line| line
            .trim()
            .eq_ignore_ascii_case("idempotent-replayed: true")),
        "{stdout}"
    );
    let body = |text: &str| text.lines().last().unwrap_or_default().trim().to_owned();
    assert_eq!(
        body(sent),
        body(replayed),
        "the replay is not byte for byte"
    );

    let status = terminate_and_wait(&mut relay.child).await;
    assert!(status.success(), "the relay exited with {status}");
}

/// The `VAR=value` words before `cargo run` in a line of the README, and the arguments after
/// `--`.
fn start_line(line: &str) -> (Vec<(String, String)>, Vec<String>) {
    let (before, after) = line.split_once(" -- ").expect("no `--` in a start command");
    let vars = before
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    (vars, after.split_whitespace().map(str::to_owned).collect())
}

/// Replaces `from` with `to` in every value and argument.
fn moved(words: &mut [String], from: &str, to: &str) {
    for word in words {
        *word = word.replace(from, to);
    }
}

#[tokio::test]
async fn readme_lifecycle_walkthrough_shows_sent_delivered_read_and_a_failed_131026() {
    let markdown = parse(&read("README.md"));
    let start = markdown
        .blocks
        .iter()
        .find(|block| block.heading == LIFECYCLE_HEADING && block.language == "text")
        .expect("no start commands under the after-SENT heading");
    let [receive_line, serve_line] = &start.lines[..] else {
        panic!("two start commands expected: {:?}", start.lines);
    };
    let (receive_vars, mut receive_args) = start_line(receive_line);
    let (serve_vars, serve_args) = start_line(serve_line);
    // The README's addresses, on free ports: they may be taken on this machine.
    let events = free_listen();
    let hooks = free_listen();
    let listen = free_listen();
    moved(&mut receive_args, "127.0.0.1:9000", &events);
    let mut receiver = binary(&receive_args.iter().map(String::as_str).collect::<Vec<_>>());
    receiver.envs(receive_vars);
    let mut receiver = receiver.spawn().unwrap();
    let mut relay = binary(&serve_args.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, value) in serve_vars {
        let value = value
            .replace("127.0.0.1:9000", &events)
            .replace("127.0.0.1:8081", &hooks);
        relay.env(name, value);
    }
    let mut relay = start_serving(relay, &listen).await;

    let walkthrough = readme_blocks().pop().unwrap();
    let stdout = run_block(&walkthrough, &listen).await;
    // curl prints each answer with no newline after it: read a stream of JSON values.
    let records: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .filter(|value| value.get("statuses").is_some())
        .collect();
    assert_eq!(records.len(), 2, "{stdout}");
    assert_eq!(records[0]["status"], "READ", "{stdout}");
    assert_eq!(records[1]["status"], "FAILED", "{stdout}");
    assert_eq!(records[1]["error"]["code"], 131026, "{stdout}");

    // The receiver prints one verified line per event; stop it once all five have come.
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let wanted = [
        ("hello-1", "SENT"),
        ("hello-1", "DELIVERED"),
        ("hello-1", "READ"),
        ("hello-2", "SENT"),
        ("hello-2", "FAILED"),
    ];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !wanted.iter().all(|pair| seen.contains(pair)) {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the receiver stopped");
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            let data = &event["event"]["data"];
            let pair = (
                data["messageId"].as_str().unwrap_or_default().to_owned(),
                data["status"].as_str().unwrap_or_default().to_owned(),
            );
            if let Some(known) = wanted.iter().find(|w| w.0 == pair.0 && w.1 == pair.1) {
                seen.push(*known);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the receiver printed only {seen:?}"));
    terminate(&relay.child);
    let _ = tokio::time::timeout(EVENT_TIMEOUT, relay.child.wait()).await;
    let _ = receiver.kill().await;
}
