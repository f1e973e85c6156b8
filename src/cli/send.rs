//! `ldae send`: C-STORE DICOM files or folders to a peer (a PACS), one association per series, printing what
//! became of every instance. For operators (check a PACS connection, resend an outbox by hand) and for tests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use crate::dicom::net::{
    read_instance, send_with_retry, AeTitle, InstanceInfo, InstanceResult, PeerAddr, RetryPolicy, SendOptions,
    SeriesOutcome,
};

/// Arguments of `ldae send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 = every instance stored (success or warning status); 1 = at least one file \
unreadable or instance not stored (one line on stderr: `error: <reason>`); 2 = usage or configuration error.")]
pub struct SendArgs {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The peer, as AET@host:port.
    #[arg(long, value_name = "AET@HOST:PORT")]
    pub to: PeerAddr,
    /// Our AE title.
    #[arg(long, default_value = "LDAE")]
    pub calling_aet: AeTitle,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Associations to try per series (transient failures only; a rejection is never retried).
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// Largest PDU to accept and send, in bytes (default: limits.max_pdu_bytes).
    #[arg(long)]
    pub max_pdu: Option<u32>,
    /// Seconds allowed to connect and for each read or write.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

pub fn run(args: SendArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = if config.exists() { Config::load(config)? } else { Config::default() };
    let mut opts = SendOptions { limits: cfg.limits.clone(), ..SendOptions::default() };
    opts.max_pdu = args.max_pdu.unwrap_or(cfg.limits.max_pdu_bytes);
    anyhow::ensure!((4096..=1 << 26).contains(&opts.max_pdu), "--max-pdu must be in 4096..=67108864");
    anyhow::ensure!(args.timeout > 0.0 && args.timeout.is_finite(), "--timeout must be a positive number of seconds");
    opts.connect_timeout = Duration::from_secs_f64(args.timeout);
    opts.io_timeout = opts.connect_timeout;
    let policy = RetryPolicy { max_attempts: args.attempts.max(1), ..RetryPolicy::default() };

    let mut unreadable: Vec<(PathBuf, String)> = Vec::new();
    let mut series: Vec<(String, Vec<InstanceInfo>)> = Vec::new();
    for path in files(&args.inputs, &mut unreadable) {
        match read_instance(&path, &opts.limits) {
            Ok(info) => match series.iter_mut().find(|(uid, _)| *uid == info.series_instance_uid) {
                Some((_, v)) => v.push(info),
                None => series.push((info.series_instance_uid.clone(), vec![info])),
            },
            Err(e) => unreadable.push((path, e.to_string())),
        }
    }
    let outcomes: Vec<(String, SeriesOutcome)> = series
        .iter()
        .map(|(uid, infos)| {
            let o = send_with_retry(&args.to, &args.calling_aet, infos, &opts, &policy, &mut std::thread::sleep);
            (uid.clone(), o)
        })
        .collect();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report(&args, &outcomes, &unreadable))?);
    } else {
        for (uid, o) in &outcomes {
            for i in &o.instances {
                match &i.result {
                    InstanceResult::Stored { status, warning: false } => {
                        println!("stored  {} ({status:04X}H)", i.sop_instance_uid)
                    }
                    InstanceResult::Stored { status, warning: true } => {
                        println!("warning {} ({status:04X}H)", i.sop_instance_uid)
                    }
                    InstanceResult::Refused { reason, .. } | InstanceResult::Failed { reason, .. } => {
                        println!("failed  {}: {reason}", i.sop_instance_uid)
                    }
                }
            }
            println!(
                "series {uid} -> {}: {}/{} stored ({} with warnings) in {:.2} s, {} association{}",
                o.peer,
                o.stored(),
                o.instances.len(),
                o.warnings(),
                o.elapsed.as_secs_f64(),
                o.attempts,
                if o.attempts == 1 { "" } else { "s" }
            );
        }
    }
    if let Some(line) = first_failure(&outcomes, &unreadable) {
        eprintln!("error: {line}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Every regular file under `inputs`, sorted per folder; unreadable folders go to `bad`.
fn files(inputs: &[PathBuf], bad: &mut Vec<(PathBuf, String)>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            for entry in walkdir::WalkDir::new(input).sort_by_file_name() {
                match entry {
                    Ok(e) if e.file_type().is_file() => out.push(e.into_path()),
                    Ok(_) => {}
                    Err(e) => bad.push((input.clone(), e.to_string())),
                }
            }
        } else {
            out.push(input.clone());
        }
    }
    out
}

/// The one line that says why the command failed, if it did.
fn first_failure(outcomes: &[(String, SeriesOutcome)], unreadable: &[(PathBuf, String)]) -> Option<String> {
    if let Some((_, reason)) = unreadable.first() {
        return Some(format!("{reason} ({} file(s) not sent)", unreadable.len()));
    }
    for (uid, o) in outcomes {
        if o.is_complete() {
            continue;
        }
        let missing = o.instances.len() - o.stored();
        let why = match &o.error {
            Some(e) => e.to_string(),
            None => o
                .instances
                .iter()
                .find_map(|i| match &i.result {
                    InstanceResult::Refused { reason, .. } | InstanceResult::Failed { reason, .. } => {
                        Some(format!("{}: {reason}", i.sop_instance_uid))
                    }
                    InstanceResult::Stored { .. } => None,
                })
                .unwrap_or_default(),
        };
        return Some(format!(
            "series {uid}: {missing} of {} instance(s) not stored after {} association(s): {why}",
            o.instances.len(),
            o.attempts
        ));
    }
    None
}

fn report(
    args: &SendArgs,
    outcomes: &[(String, SeriesOutcome)],
    unreadable: &[(PathBuf, String)],
) -> serde_json::Value {
    let series: Vec<_> = outcomes
        .iter()
        .map(|(uid, o)| {
            serde_json::json!({
                "series_instance_uid": uid,
                "peer": o.peer,
                "attempts": o.attempts,
                "elapsed_s": o.elapsed.as_secs_f64(),
                "peer_max_pdu": o.peer_max_pdu,
                "stored": o.stored(),
                "warnings": o.warnings(),
                "complete": o.is_complete(),
                "error": o.error.as_ref().map(|e| e.to_string()),
                "error_class": o.error.as_ref().map(|e| e.class()),
                "instances": o.instances,
            })
        })
        .collect();
    let unreadable: Vec<_> = unreadable.iter().map(|(p, r)| serde_json::json!({"path": p, "reason": r})).collect();
    serde_json::json!({
        "peer": args.to.to_string(),
        "calling_aet": args.calling_aet,
        "series": series,
        "unreadable": unreadable,
    })
}
