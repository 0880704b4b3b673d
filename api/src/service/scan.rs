//! Malware scanning of uploads, before they are stored (e-RS `THREATS_FOUND`): the file's
//! bytes go to the scanner command on its standard input, which answers as ClamAV's
//! `clamdscan -` does — exit 0 clean, 1 a threat (named on its first line of output), anything
//! else a failure. With no command configured, only the EICAR anti-malware test file is
//! refused, so that a client can try the refusal in the sandbox; production configures a
//! scanner (`ERS_SCAN_COMMAND`).

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Result, ServiceError};

/// The longest a scan may take before it counts as a failure.
const TIMEOUT_SECS: u32 = 60;

/// The EICAR test file's signature (its 68 bytes contain this).
const EICAR: &[u8] = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!";

/// What a scan found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// A threat, as the scanner named it.
    Threat(String),
}

/// Scans `bytes` with `command` (a shell command line), or, without one, for the EICAR test
/// file only.
pub fn scan(command: Option<&str>, bytes: &[u8]) -> Result<Verdict> {
    let Some(command) = command else {
        return Ok(if bytes.windows(EICAR.len()).any(|w| w == EICAR) {
            Verdict::Threat("the EICAR anti-malware test file".into())
        } else {
            Verdict::Clean
        });
    };
    let failed = |why: String| ServiceError::Unavailable(format!("the malware scanner {why}"));
    let mut child = Command::new("timeout")
        .arg(TIMEOUT_SECS.to_string())
        .args(["sh", "-c", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("could not be started: {e}")))?;
    // Fed from another thread, so that a scanner writing as it reads never waits on us; one
    // that stops reading early (it decided) ends the feed with a broken pipe, which is fine.
    let feed = child.stdin.take().map(|mut stdin| {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("did not finish: {e}")))?;
    if let Some(feed) = feed {
        let _ = feed.join();
    }
    let first_line = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    match out.status.code() {
        Some(0) => Ok(Verdict::Clean),
        Some(1) => Ok(Verdict::Threat(
            Some(first_line(&out.stdout))
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "a threat".into()),
        )),
        Some(124) => Err(failed(format!("took more than {TIMEOUT_SECS} s"))),
        code => Err(failed(format!(
            "failed ({}): {}",
            code.map_or("killed".to_owned(), |c| format!("exit {c}")),
            first_line(&out.stderr)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_scanner_only_the_eicar_test_file_is_a_threat() {
        let eicar = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
        assert!(matches!(scan(None, eicar), Ok(Verdict::Threat(_))));
        assert_eq!(scan(None, b"a letter").ok(), Some(Verdict::Clean));
    }

    #[test]
    fn a_scanner_command_decides_by_its_exit_status() {
        let grep = "if grep -q MALWARE; then echo 'stream: Test.Sig FOUND'; exit 1; fi";
        assert_eq!(scan(Some(grep), b"clean").ok(), Some(Verdict::Clean));
        assert_eq!(
            scan(Some(grep), b"some MALWARE here").ok(),
            Some(Verdict::Threat("stream: Test.Sig FOUND".into()))
        );
        let big = vec![b'a'; 4 << 20];
        assert_eq!(scan(Some("exit 0"), &big).ok(), Some(Verdict::Clean));
        let failed = scan(Some("echo 'no daemon' >&2; exit 2"), b"x");
        assert!(
            matches!(&failed, Err(ServiceError::Unavailable(m)) if m.contains("exit 2") && m.contains("no daemon")),
            "{failed:?}"
        );
    }
}
