//! Which ids are UUIDs, in which spelling, and which ones some parser would read as one
//! (module docs of [`super`]).

/// What an id looks like with respect to UUIDs.
pub(super) enum Spelling {
    /// A UUID; its canonical spelling.
    Uuid(String),
    /// Nearly a UUID: refused rather than guessed.
    Ambiguous,
    /// Not a UUID: kept as written.
    Other,
}

pub(super) const URN_UUID: &str = "urn:uuid:";

pub(super) fn uuid_spelling(raw: &str) -> Spelling {
    let (body, marked) = if let Some(inner) = raw
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
    {
        (inner, true)
    } else if starts_with_ignore_case(raw, URN_UUID) {
        (&raw[URN_UUID.len()..], true)
    } else {
        (raw, false)
    };
    if let Some(canonical) = uuid_body(body) {
        return Spelling::Uuid(canonical);
    }
    // Braces around anything else fail the grammar anyway ('{' is outside it).
    let urn_of_something_else = marked && !raw.starts_with('{');
    // What a backend's router may cut off before its UUID parser sees the id: a format
    // suffix (`{id}.json`: Rails stops `:id` at the first dot, Spring drops the last one).
    let before_suffix = [raw.split_once('.'), raw.rsplit_once('.')]
        .into_iter()
        .flatten()
        .map(|(id, _)| id);
    let read_as_uuid = |id: &str| uuid_spelling_exact(id) || read_leniently(id);
    if urn_of_something_else || read_leniently(raw) || before_suffix.into_iter().any(read_as_uuid) {
        Spelling::Ambiguous
    } else {
        Spelling::Other
    }
}

/// Whether `id` is one of the recognised spellings (module docs).
fn uuid_spelling_exact(id: &str) -> bool {
    let body = id
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .or_else(|| starts_with_ignore_case(id, URN_UUID).then(|| &id[URN_UUID.len()..]))
        .unwrap_or(id);
    uuid_body(body).is_some()
}

/// Whether a widely used lenient UUID parser reads `id` as a UUID although it is none of the
/// recognised spellings:
///
/// - Python's `uuid.UUID` (Django, DRF): removes `urn:` and `uuid:` anywhere, braces at both
///   ends and every hyphen, wants 32 characters, then reads them with `int(…, 16)`, which
///   takes a `0x` prefix and `_` between digits (so hyphens anywhere, `uuid:…`, `urn:…`,
///   `0x3f2b8c…`, `0_3f2b8c…`);
/// - Go's `github.com/google/uuid` `Parse`: any 38-byte string whose bytes 1–36 are a
///   hyphenated UUID (the two ends are taken as braces without being checked);
/// - Java's `UUID.fromString` (JDK 8: no length limit, trailing hyphens ignored) and .NET's
///   `Guid.Parse` (a group may start with `0x`): five groups of hex digits of any length, each
///   perhaps after `0x` (`1-2-3-4-5`, `03f2b8c1e-6a4d-…`, `0x3f2b8c-6a4d-…`).
fn read_leniently(id: &str) -> bool {
    if !id.is_ascii() {
        return false;
    }
    // Every reading below needs 9 bytes at least (five groups and four hyphens; Python's
    // needs 32, Go's 38): short ids (`s1`) stop here, before the allocations, on every
    // check's path.
    if id.len() < 9 {
        return false;
    }
    let lower = id.to_ascii_lowercase();
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let python = {
        let stripped = lower.replace("urn:", "").replace("uuid:", "");
        let digits: String = stripped
            .trim_matches(['{', '}'])
            .chars()
            .filter(|&c| c != '-')
            .collect();
        let number = digits
            .strip_prefix("0x")
            .unwrap_or(&digits)
            .replace('_', "");
        // Python reads 32 underscores as no number at all; refused all the same (a `_` run is
        // no one's session id, and the published pattern stays a plain one).
        digits.len() == 32 && number.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let go = id.len() == 38 && uuid_body(&id[1..37]).is_some();
    let groups: Vec<&str> = lower.trim_end_matches('-').split('-').collect();
    let five_groups = groups.len() == 5
        && groups
            .iter()
            .all(|g| is_hex(g.strip_prefix("0x").unwrap_or(g)));
    python || go || five_groups
}

fn starts_with_ignore_case(raw: &str, prefix: &str) -> bool {
    raw.len() >= prefix.len()
        && raw.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The canonical spelling of `body` when it is 8-4-4-4-12 or 32 hex digits.
fn uuid_body(body: &str) -> Option<String> {
    let bytes = body.as_bytes();
    let hex: Vec<u8> = match bytes.len() {
        32 => bytes.to_vec(),
        36 if [8, 13, 18, 23].iter().all(|&i| bytes[i] == b'-') => bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| ![8, 13, 18, 23].contains(i))
            .map(|(_, b)| *b)
            .collect(),
        _ => return None,
    };
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, b) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(b.to_ascii_lowercase() as char);
    }
    Some(out)
}
