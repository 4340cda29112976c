//! The newcomer's command: `assignd demo` works with no account and no network.

mod common;

use std::process::Command;

#[test]
fn demo_accounts_for_every_chat_without_a_429() {
    let out = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(["demo", "--chats", "60"])
        .env_remove("ASSIGND_CONFIG")
        .output();
    let stdout = common::ok_stdout("assignd demo", &out.unwrap());
    assert!(
        stdout.contains(
            "chats: 60 enqueued -> 58 done, 2 dead, 0 unfinished (every chat accounted for)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 answered 429"), "{stdout}");
    assert!(stdout.contains("chat 1060: HTTP 404"), "{stdout}");
    // Not a terminal: progress comes as whole lines, the last when drained.
    assert!(stdout.contains("\n  60/60 chats  · "), "{stdout}");
    assert!(stdout.contains("/s of 20.00/s ("), "{stdout}");
    assert!(!stdout.contains('\r'), "{stdout}");
    // The whole day on the simulated clock, whatever the time is now.
    let day = stdout
        .split("a whole day on a simulated clock")
        .nth(1)
        .unwrap_or_else(|| panic!("no simulated day: {stdout}"));
    common::assert_contains(
        day,
        &[
            "09:00  chat 5011  -> alice: rule `everything else`: round-robin: first pick -> alice",
            "09:09  chat 5012  -> bob: rule `everything else`: round-robin: last was alice -> bob",
            "busy reply from dave: \"All our agents are busy: you are number 1 in line.",
            "escalated after 30s (step 1 of 1) to pool `night`",
            "14:00  chat 5202  handed back from bob (shift ended)",
            "-> dave: rule `after-hours`",
            "reply from dave: \"Thanks for writing! The office opens Wednesday 3 June, 09:00 EEST;",
        ],
    );
    // Then a shadow run on the sandbox playing a live account, compared.
    let shadow = stdout
        .split("Shadow mode: what assignd would have done")
        .nth(1)
        .unwrap_or_else(|| panic!("no shadow run: {stdout}"));
    common::assert_contains(
        shadow,
        &[
            "writes that reached HelpCrunch from the shadow: 0",
            "shadow against reality (60 and 60 chats",
            "shadow assigns faster by",
        ],
    );
}
