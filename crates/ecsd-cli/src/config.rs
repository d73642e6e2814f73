//! `ecsd serve --config FILE`: settings from a TOML file, keyed by the long names of `serve`'s
//! options. The file's values become the options' defaults, so an option given on the command
//! line or in the environment wins; a key that names no option is an error naming the key.

use std::path::Path;

use clap::{ArgAction, CommandFactory, FromArgMatches};

use crate::Cli;

/// The command line, with the settings of `--config` (or `ECSD_CONFIG`) applied.
pub fn parse() -> Result<Cli, clap::Error> {
    let args: Vec<String> = std::env::args().collect();
    let mut command = Cli::command();
    if args.get(1).map(String::as_str) == Some("serve") {
        if let Some(path) = config_path(&args[2..]) {
            command = with_file(command, Path::new(&path))?;
        }
    }
    Cli::from_arg_matches(&command.try_get_matches_from(args)?)
}

/// The value of `--config` among `serve`'s arguments, else of `ECSD_CONFIG`.
fn config_path(args: &[String]) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().cloned();
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
        if arg == "--" {
            break;
        }
    }
    std::env::var("ECSD_CONFIG").ok().filter(|p| !p.is_empty())
}

fn invalid(path: &Path, problem: impl std::fmt::Display) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::InvalidValue,
        format!("cannot use the settings file {}: {problem}\n", path.display()),
    )
}

/// `command` with the settings of the file at `path` as `serve`'s defaults.
fn with_file(command: clap::Command, path: &Path) -> Result<clap::Command, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(path, e))?;
    let mut serve = command
        .find_subcommand("serve")
        .expect("ecsd has a serve command")
        .clone();
    for (key, value) in table {
        let name = key.replace('_', "-");
        let Some(arg) = serve.get_arguments().find(|a| a.get_long() == Some(name.as_str())) else {
            return Err(invalid(
                path,
                format!("unknown key '{key}': it is no option of `ecsd serve`"),
            ));
        };
        if name == "config" {
            return Err(invalid(path, "a settings file cannot name another"));
        }
        let id = arg.get_id().clone();
        let many = matches!(arg.get_action(), ArgAction::Append);
        let values: Vec<String> = match value {
            toml::Value::Array(items) if many => items.iter().map(scalar).collect::<Option<_>>(),
            toml::Value::Array(_) => None,
            other => scalar(&other).map(|v| vec![v]),
        }
        .ok_or_else(|| invalid(path, format!("'{key}' must be a string, number or boolean")))?;
        serve = serve.mut_arg(id, |a| a.default_values(values));
    }
    Ok(command.mut_subcommand("serve", |_| serve))
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}
