//! The layered loader: defaults, the file, `ESTUARY_*` variables, flags.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use serde::Deserialize as _;
use toml::{Table, Value};

use super::Config;
use super::keys::{SETTINGS, Setting, ValueKind};

/// The order in which the layers apply, for `--help` and the docs.
pub const PRECEDENCE: &str = "Configuration, lowest to highest precedence: the defaults, then the file \
given with --config (or ESTUARY_CONFIG), then ESTUARY_* environment variables, then flags. A later \
layer wins key by key; keys without a flag (see `estuary check-config`) are set in the file. An \
invalid value is reported with its source: the file's key, the variable, or the flag.";

/// The flags of `estuary serve` (and `estuary check-config`): `--config`,
/// and one flag per row of [`SETTINGS`].
///
/// ```
/// use estuary_cli::config::{Config, ServeArgs};
///
/// let args = ServeArgs::try_parse_from(["--bind", "127.0.0.1:9000", "--layer", "memory"])?;
/// assert_eq!(Config::from_layers(args.layers())?.bind, "127.0.0.1:9000");
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// The settings given as flags: key and text, in [`SETTINGS`] order
    /// (a list's items joined by commas; a switch is `"true"`).
    pub flags: Vec<(&'static str, String)>,
}

impl ServeArgs {
    /// Parses these flags (without the program or subcommand name).
    pub fn try_parse_from<I, T>(flags: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Self::augment_args(Command::new("serve").no_binary_name(true));
        let matches = command.try_get_matches_from(flags)?;
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// The file and flags given, without the environment.
    pub fn layers(&self) -> Layers {
        Layers {
            file: None,
            env: Vec::new(),
            flags: self.flags.clone(),
        }
    }
}

impl Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let command = command.after_help(PRECEDENCE).arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("A TOML configuration file [env: ESTUARY_CONFIG]"),
        );
        SETTINGS.iter().fold(command, |command, setting| {
            let help = format!("{} [env: {}] [key: {}]", setting.help, setting.env, setting.key);
            let arg = Arg::new(setting.key).long(setting.flag).help(help);
            let arg = match setting.kind {
                ValueKind::Switch | ValueKind::SwitchOff => arg.action(ArgAction::SetTrue),
                ValueKind::List | ValueKind::Layer => arg.action(ArgAction::Append).value_delimiter(','),
                _ => arg.action(ArgAction::Set),
            };
            command.arg(arg)
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        for setting in SETTINGS {
            let text = match setting.kind {
                ValueKind::Switch => matches.get_flag(setting.key).then(|| "true".to_owned()),
                ValueKind::SwitchOff => matches.get_flag(setting.key).then(|| "false".to_owned()),
                ValueKind::List | ValueKind::Layer => matches
                    .get_many::<String>(setting.key)
                    .map(|items| items.cloned().collect::<Vec<_>>().join(",")),
                _ => matches.get_one::<String>(setting.key).cloned(),
            };
            if let Some(text) = text {
                flags.push((setting.key, text));
            }
        }
        Ok(Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// The layers a configuration is made of, before they are merged.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The file's name (for messages) and its text.
    pub file: Option<(PathBuf, String)>,
    /// Environment variables, name and value; names that are not in
    /// [`SETTINGS`] are ignored.
    pub env: Vec<(String, String)>,
    /// Flags: key (a [`Setting::key`]) and text.
    pub flags: Vec<(&'static str, String)>,
}

/// Where a key's value came from, for messages.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "the configuration file {}", path.display()),
            Source::Env(name) => write!(f, "the variable {name}"),
            Source::Flag(flag) => write!(f, "the flag --{flag}"),
        }
    }
}

impl Layers {
    /// The file named by `args` (or `ESTUARY_CONFIG`), the process's
    /// `ESTUARY_*` variables, and the flags of `args`.
    pub fn from_process(args: &ServeArgs) -> anyhow::Result<Self> {
        let path = args
            .config
            .clone()
            .or_else(|| std::env::var_os("ESTUARY_CONFIG").map(PathBuf::from));
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read configuration file {}", path.display()))?;
                Some((path, text))
            }
            None => None,
        };
        let env = SETTINGS
            .iter()
            .filter_map(|s| {
                let value = std::env::var_os(s.env)?;
                Some(
                    value
                        .into_string()
                        .map(|v| (s.env.to_owned(), v))
                        .map_err(|_| s.env),
                )
            })
            .collect::<Result<_, _>>()
            .map_err(|name| anyhow!("the variable {name} is not valid UTF-8"))?;
        Ok(Self {
            file,
            env,
            flags: args.flags.clone(),
        })
    }
}

/// Sets the dotted `key` in `table` (making the tables on the way), or
/// removes it when `value` is `None`.
fn set(table: &mut Table, key: &str, value: Option<Value>) {
    let (parents, last) = match key.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, key),
    };
    let mut table = table;
    for part in parents.into_iter().flat_map(|p| p.split('.')) {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        table = match entry {
            Value::Table(inner) => inner,
            _ => return,
        };
    }
    match value {
        Some(value) => {
            table.insert(last.to_owned(), value);
        }
        None => {
            table.remove(last);
        }
    }
}

/// Puts `over` on `base` key by key: a table in both is merged, any other
/// value of `over` replaces `base`'s.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(inner)), Value::Table(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Whether the dotted `key` is set in `table`.
fn is_set(table: &Table, key: &str) -> bool {
    let mut parts = key.split('.');
    let mut value = parts.next().and_then(|first| table.get(first));
    for part in parts {
        value = value.and_then(|v| v.as_table()).and_then(|t| t.get(part));
    }
    value.is_some()
}

impl Config {
    /// The configuration `estuary serve` runs with: [`Layers::from_process`]
    /// merged by [`Config::from_layers`].
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        Self::from_layers(Layers::from_process(args)?)
    }

    /// Merges `layers` over the defaults (the file, then the variables,
    /// then the flags; a later one wins key by key) and checks the result.
    /// An error names the source of the value it is about.
    pub fn from_layers(layers: Layers) -> anyhow::Result<Self> {
        // The app's defaults are a layer of their own, under the file: a
        // table the file holds keeps the app's defaults for the keys it
        // leaves out, not its library's.
        let mut merged =
            Table::try_from(Config::default()).context("the defaults do not make a TOML table")?;
        let mut sources: HashMap<&'static str, Source> = HashMap::new();
        let mut file_table = Table::new();
        if let Some((path, text)) = &layers.file {
            file_table = toml::from_str(text)
                .with_context(|| format!("invalid configuration file {}", path.display()))?;
            merge(&mut merged, file_table.clone());
        }
        let env = layers.env.iter().filter_map(|(name, text)| {
            Setting::by_env(name).map(|setting| (setting, Source::Env(setting.env), text))
        });
        let flags = layers.flags.iter().map(|(key, text)| {
            let setting = Setting::by_key(key).ok_or_else(|| anyhow!("no setting has the key {key}"));
            (setting, text)
        });
        let flags = flags
            .map(|(setting, text)| setting.map(|s| (s, Source::Flag(s.flag), text)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut applied = Vec::new();
        for (setting, source, text) in env.chain(flags) {
            let value = setting
                .value(text)
                .with_context(|| format!("{source} ({}): {text:?}", setting.key))?;
            set(&mut merged, setting.key, value.clone());
            sources.insert(setting.key, source.clone());
            applied.push((setting, source, text, value));
        }
        let config = match Config::deserialize(Value::Table(merged)) {
            Ok(config) => config,
            Err(error) => {
                // The file alone, typed: an error there has the file's line
                // and key. (A file may lack what a variable or flag gives,
                // such as a secret: only the merged result must be whole.)
                if let Some((path, text)) = &layers.file {
                    toml::from_str::<Config>(text)
                        .with_context(|| format!("invalid configuration file {}", path.display()))?;
                }
                // Else the culprit is a variable or a flag. Each alone names
                // its source (an unknown flavour, a number too large, half
                // of a pair that goes together).
                for (setting, source, text, value) in applied {
                    let mut alone = Table::new();
                    set(&mut alone, setting.key, value);
                    Config::deserialize(Value::Table(alone))
                        .with_context(|| format!("{source} ({}): {text:?}", setting.key))?;
                }
                return Err(
                    anyhow::Error::new(error).context("the configuration file, variables and flags together")
                );
            }
        };
        let source_of = |key: &str| -> Option<Source> {
            let mut set_by: Vec<_> = sources
                .iter()
                .filter(|(k, _)| **k == key || k.starts_with(&format!("{key}.")))
                .map(|(_, s)| s.clone())
                .collect();
            set_by.sort_by_key(|s| matches!(s, Source::Env(_)));
            set_by.into_iter().next().or_else(|| {
                let (path, _) = layers.file.as_ref()?;
                is_set(&file_table, key).then(|| Source::File(path.clone()))
            })
        };
        config.refuse_redacted().map_err(|e| match source_of(&e.key) {
            Some(source) => e.error.context(format!("{} (from {source})", e.key)),
            None => e.error,
        })?;
        config.validate().map_err(|e| match source_of(&e.key) {
            Some(source) => e.error.context(format!("{} (from {source})", e.key)),
            None => e.error,
        })?;
        Ok(config)
    }
}
