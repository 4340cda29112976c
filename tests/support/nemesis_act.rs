//! What the nemesis does: each planned action carried out on the world,
//! what undoes it, and the heal after the last one.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::plan::{AGENTS, Action, SandboxFault, rules};
use crate::world::{Cast, Db, Stage, exit_within, faults_of};

/// What ends an action that lasts.
#[derive(Debug, Clone, Copy)]
pub enum Undo {
    Start(usize),
    Resume(usize),
    DbStart,
    Back(usize),
    Clear(SandboxFault),
}

impl Cast {
    /// Carries out `action` (skipped when it cannot apply, e.g. a stopped
    /// daemon): what undoes it, and after how long.
    pub async fn act(&mut self, stage: &Stage, action: &Action) -> Option<(Duration, Undo)> {
        // None: skipped; Some(None): done, nothing to undo.
        let effect = match *action {
            Action::Kill { daemon, .. } => {
                (self.kill(stage, daemon).await).then_some(Some(Undo::Start(daemon)))
            }
            Action::Pause { daemon, .. } => {
                (self.pause(stage, daemon)).then_some(Some(Undo::Resume(daemon)))
            }
            Action::Restart { daemon } => (self.restart(stage, daemon).await).then_some(None),
            Action::Reload { variant } => (self.reload(stage, variant)).then_some(None),
            Action::DbOutage { immediate, .. } => {
                (self.db_stop(stage, immediate).await).then_some(Some(Undo::DbStart))
            }
            Action::Takeover { kill, .. } => self
                .takeover(stage, kill)
                .await
                .map(|i| Some(Undo::Start(i))),
            Action::Away { agent, .. } => {
                (self.away(stage, agent).await).then_some(Some(Undo::Back(agent)))
            }
            Action::Fault { fault, .. } => {
                self.fault(stage, fault, true);
                Some(Some(Undo::Clear(fault)))
            }
        };
        let Some(undo) = effect else {
            self.note(stage, format!("skipped {action:?}"));
            self.skipped += 1;
            return None;
        };
        *self.counts.entry(action.kind()).or_default() += 1;
        Some((action.lasts()?, undo?))
    }

    pub async fn undo(&mut self, stage: &Stage, undo: Undo) {
        match undo {
            Undo::Start(i) if self.slots[i].daemon.is_none() => {
                self.note(stage, format!("start daemon {i}"));
                self.spawn(stage, i);
            }
            Undo::Start(_) => {}
            Undo::Resume(i) => self.resume(stage, i),
            Undo::DbStart => self.db_start(stage).await,
            Undo::Back(agent) => self.back(stage, agent).await,
            Undo::Clear(fault) => self.fault(stage, fault, false),
        }
    }

    /// Ends every fault: the sandbox's, stopped daemons, the database,
    /// agents away; every daemon runs.
    pub async fn heal(&mut self, stage: &Stage, undos: Vec<(Instant, Undo)>) {
        for (_, undo) in undos {
            self.undo(stage, undo).await;
        }
        self.faults.clear();
        stage.app.sandbox.set_faults(faults_of(&self.faults));
        self.db_start(stage).await;
        for i in 0..self.slots.len() {
            self.resume(stage, i);
            self.undo(stage, Undo::Start(i)).await;
        }
        let since = Instant::now();
        while let Some(&agent) = self.away.iter().next() {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "agents stay away: {:?}",
                self.away
            );
            self.back(stage, agent).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.ready_only = true;
        self.note(stage, "healed: no fault any more".into());
    }

    async fn kill(&mut self, stage: &Stage, i: usize) -> bool {
        let Some(mut d) = self.slots[i].daemon.take() else {
            return false;
        };
        self.note(stage, format!("kill -9 daemon {i} (pid {})", d.pid()));
        signal(d.pid(), "-KILL");
        let _ = exit_within(&mut d, Duration::from_secs(5)).await;
        self.slots[i] = Default::default();
        true
    }

    fn pause(&mut self, stage: &Stage, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let Some(pid) = slot
            .daemon
            .as_ref()
            .filter(|_| !slot.paused)
            .map(Daemon::pid)
        else {
            return false;
        };
        signal(pid, "-STOP");
        slot.paused = true;
        self.note(stage, format!("SIGSTOP daemon {i} (pid {pid})"));
        true
    }

    fn resume(&mut self, stage: &Stage, i: usize) {
        let slot = &mut self.slots[i];
        if let (Some(d), true) = (&slot.daemon, slot.paused) {
            let pid = d.pid();
            signal(pid, "-CONT");
            slot.paused = false;
            self.note(stage, format!("SIGCONT daemon {i} (pid {pid})"));
        }
    }

    /// SIGTERM, then a new process in its place.
    async fn restart(&mut self, stage: &Stage, i: usize) -> bool {
        let stopped = self.terminate(stage, i).await;
        if stopped {
            self.spawn(stage, i);
        }
        stopped
    }

    /// SIGTERM, and waits for the exit; the slot is left empty.
    async fn terminate(&mut self, stage: &Stage, i: usize) -> bool {
        if self.slots[i].paused {
            return false;
        }
        let Some(mut d) = self.slots[i].daemon.take() else {
            return false;
        };
        self.note(stage, format!("SIGTERM daemon {i} (pid {})", d.pid()));
        signal(d.pid(), "-TERM");
        match exit_within(&mut d, Duration::from_secs(12)).await {
            Some(status) if status.success() => {}
            status => {
                let what = format!("daemon {i} after SIGTERM: {status:?}");
                self.self_exits.push(what.clone());
                self.note(stage, what);
            }
        }
        self.slots[i] = Default::default();
        true
    }

    /// Rules variant `variant`, and SIGHUP to every daemon.
    fn reload(&mut self, stage: &Stage, variant: usize) -> bool {
        let path = stage.app.dir.path().join("rules.toml");
        std::fs::write(path, rules(variant, &stage.shift)).unwrap();
        for d in self.slots.iter().filter_map(|s| s.daemon.as_ref()) {
            hup(d.pid());
        }
        self.note(stage, format!("SIGHUP with rules variant {variant}"));
        true
    }

    async fn db_stop(&mut self, stage: &Stage, immediate: bool) -> bool {
        let (Db::Postgres { server, .. }, false) = (&stage.db, self.db_down) else {
            return false;
        };
        let server: &'static crate::postgres::PgServer = server;
        let mode = if immediate { "immediate" } else { "fast" };
        self.note(stage, format!("PostgreSQL stop -m {mode}"));
        tokio::task::spawn_blocking(move || server.stop(mode))
            .await
            .unwrap();
        self.db_down = true;
        true
    }

    async fn db_start(&mut self, stage: &Stage) {
        if let (Db::Postgres { server, .. }, true) = (&stage.db, self.db_down) {
            let server: &'static crate::postgres::PgServer = server;
            tokio::task::spawn_blocking(move || server.start())
                .await
                .unwrap();
            self.db_down = false;
            self.note(stage, "PostgreSQL started".into());
        }
    }

    /// SQLite: stops the daemon holding the file; its slot.
    async fn takeover(&mut self, stage: &Stage, kill: bool) -> Option<usize> {
        let pid = stage
            .int("SELECT d.pid FROM leases l JOIN daemons d ON d.owner = l.owner WHERE l.name = 'daemon'")
            .await
            .ok()?;
        let i = self.slots.iter().position(|s| {
            !s.paused && s.daemon.as_ref().is_some_and(|d| i64::from(d.pid()) == pid)
        })?;
        self.note(stage, format!("takeover: the holder is daemon {i}"));
        let stopped = if kill {
            self.kill(stage, i).await
        } else {
            self.terminate(stage, i).await
        };
        stopped.then_some(i)
    }

    async fn away(&mut self, stage: &Stage, agent: usize) -> bool {
        let ok = self.agent_cli(stage, "away", agent).await;
        if ok {
            self.away.insert(agent);
        }
        ok
    }

    async fn back(&mut self, stage: &Stage, agent: usize) {
        if self.agent_cli(stage, "back", agent).await {
            self.away.remove(&agent);
        }
    }

    /// `assignd agent WHAT NAME`; whether it succeeded.
    async fn agent_cli(&mut self, stage: &Stage, what: &'static str, agent: usize) -> bool {
        let name = AGENTS[agent].0;
        let mut command = stage.app.command(&["agent", what, name]);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let ok = out.status.success();
        let err = String::from_utf8_lossy(&out.stderr);
        self.note(
            stage,
            format!(
                "agent {what} {name}: {}",
                if ok { "ok" } else { err.trim() }
            ),
        );
        ok
    }

    fn fault(&mut self, stage: &Stage, fault: SandboxFault, on: bool) {
        // Counted: two windows of one fault may overlap.
        let n = self.faults.entry(fault).or_default();
        *n = if on { *n + 1 } else { n.saturating_sub(1) };
        self.faults.retain(|_, n| *n > 0);
        stage.app.sandbox.set_faults(faults_of(&self.faults));
        self.note(
            stage,
            format!("sandbox {fault:?} {}", if on { "on" } else { "off" }),
        );
    }
}
