//! A legacy file tree shaped like the census, for the backfill tests: shared by the
//! integration tests and the library's unit tests (`src/backfill/sources.rs` includes this
//! file with `#[path]`), so std only.

use std::collections::BTreeSet;
use std::path::Path;

/// Writes a legacy tree shaped like the census: 1 chat file, 54 transcripts, one id in both
/// (54 unique sessions), plus `malformed` broken files.
pub fn write_census_tree(dir: &Path, malformed: usize) -> std::io::Result<BTreeSet<String>> {
    let chats = dir.join("chats");
    let transcripts = dir.join("conversation_transcripts");
    std::fs::create_dir_all(&chats)?;
    std::fs::create_dir_all(&transcripts)?;
    let mut ids = BTreeSet::new();
    let shared = "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77";
    std::fs::write(
        chats.join(format!("chat_{shared}.json")),
        r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
    )?;
    ids.insert(shared.to_owned());
    for i in 0..54 {
        let (name, body, id) = match i {
            0 => (
                "shared".to_owned(),
                format!(r#"{{"session_id": "{shared}", "messages": []}}"#),
                shared.to_owned(),
            ),
            i if i % 3 == 0 => {
                let id = format!("session_{}", 1000 + i);
                (format!("t{i}"), format!(r#"{{"session_id": "{id}"}}"#), id)
            }
            i if i % 3 == 1 => {
                let id = format!("test-session-{i:04}");
                (id.clone(), r#"{"messages": []}"#.to_owned(), id)
            }
            i => {
                let id = format!(
                    "chat-{}-{:08x}-0000-4000-8000-{:012x}",
                    1_728_201_960 + i,
                    i,
                    i
                );
                (
                    format!("x{i}"),
                    format!(r#"{{"session_id": "{id}", "turns": 3}}"#),
                    id,
                )
            }
        };
        std::fs::write(transcripts.join(format!("{name}.json")), body)?;
        ids.insert(id);
    }
    for i in 0..malformed {
        let body = if i % 2 == 0 {
            "{ this is not json".to_owned()
        } else {
            r#"{"session_id": 42}"#.to_owned()
        };
        std::fs::write(transcripts.join(format!("broken-{i}.json")), body)?;
    }
    Ok(ids)
}
