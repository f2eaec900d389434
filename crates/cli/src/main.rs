//! `nexus`: run the gateway (`serve`, `demo`), talk to a running one (patterns, runs, catalog,
//! graph, identity) and manage API keys in the store (`token`).

/// `println!` for anything that may carry what a server returned: control characters escaped
/// ([`render::terminal_safe`]).
macro_rules! say {
    ($($t:tt)*) => { println!("{}", $crate::render::terminal_safe(&format!($($t)*))) };
}

/// `print!`, made terminal-safe like [`say!`].
macro_rules! say_raw {
    ($($t:tt)*) => { print!("{}", $crate::render::terminal_safe(&format!($($t)*))) };
}

/// `eprintln!`, made terminal-safe like [`say!`].
macro_rules! say_err {
    ($($t:tt)*) => { eprintln!("{}", $crate::render::terminal_safe(&format!($($t)*))) };
}

mod client;
mod demo;
mod exit;
mod profile;
mod progress;
mod render;
mod token;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use nexus_server::{Config, ServiceConfig};

/// mimalloc: the request path allocates many small, short-lived buffers (HTTP/2 frames,
/// messages, maps); glibc malloc took ~16% of CPU in the benchmark profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `nexus --version`: the release and the git revision it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("NEXUS_GIT_REV"), ")");

#[derive(Parser)]
#[command(name = "nexus", version = VERSION, about = "Nexus: one endpoint that runs typed patterns across gRPC services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` (for people) or `json` (one object per line, for log pipelines:
    /// fields, the execution's span with its id and trace id).
    #[arg(long, global = true, env = "NEXUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone)]
pub struct Target {
    /// Address of a running Nexus [default: the profile's, else http://127.0.0.1:50051].
    #[arg(long, global = true, env = "NEXUS_ADDR")]
    pub addr: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Credentials (an API key from `nexus token create`, or a JWT), sent as
    /// `authorization: Bearer <token>` on every call.
    #[arg(long, global = true, env = "NEXUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CAs to trust for an https:// address (default: the system's roots).
    #[arg(long, global = true, env = "NEXUS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Send --token even over plaintext (http://) to an address that is not loopback, where
    /// anyone on the path can read it. Refused without this flag.
    #[arg(long, global = true)]
    pub allow_plaintext_token: bool,
    /// How long a call may take before the CLI gives up (`30s`, `2m`) [default: the profile's, else
    /// 60s]; streams (`run --follow`) are bounded only while waiting for their first answer.
    /// Connecting has 10 s.
    #[arg(long, global = true, env = "NEXUS_TIMEOUT", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
    /// The profile (named environment) of `~/.config/nexus/config.toml` to use: its address,
    /// token, CA file and timeout (see `nexus profile --help`).
    #[arg(long, global = true, env = "NEXUS_PROFILE")]
    pub profile: Option<String>,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    nexus_server::parse_duration(s)
}

#[derive(Subcommand)]
enum EventCommand {
    /// Publish an event in your tenant (idempotent by --source and --id).
    Publish {
        /// The event type, e.g. `user.verified`.
        event_type: String,
        /// The event's data, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
        /// The event's id (default: generated). Publishing the same source and id again is a no-op.
        #[arg(long)]
        id: Option<String>,
        /// Who publishes it (default: nexus/api/<your subject>).
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print events of your tenant as they are published, until Ctrl-C.
    Tail {
        /// Only this type (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// A CEL condition over `event`, e.g. `${{ event.data.plan == 'pro' }}`.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// The CLI's profiles: named environments (address, credentials, CA file, timeout) in
/// `~/.config/nexus/config.toml` (`$XDG_CONFIG_HOME/nexus/config.toml`; NEXUS_CLI_CONFIG names
/// another file), chosen with --profile or NEXUS_PROFILE, else the file's `current`, else the
/// profile named `default`. Flags and their variables win over the profile:
///
///   current = "prod"
///   [profiles.local]
///   addr = "http://127.0.0.1:50051"
///   [profiles.prod]
///   addr = "https://nexus.example.com"
///   token_env = "NEXUS_PROD_TOKEN"   # or token = "..." in a file only you can read (chmod 600)
///   ca_file = "/etc/ssl/example-ca.pem"
///   timeout = "30s"
#[derive(Subcommand)]
#[command(verbatim_doc_comment)]
enum ProfileCommand {
    /// The profiles of the file, the one in use marked with `*`.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// What commands connect with: the profile, address, timeout (the token only as set or not).
    Show {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Print a shell completion script: `nexus completions bash > /etc/bash_completion.d/nexus`
    /// (zsh: into a directory of `$fpath` as `_nexus`; fish: `~/.config/fish/completions/nexus.fish`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `nexus man > /usr/local/share/man/man1/nexus.1`.
    Man,
    /// Named environments of the CLI (address, credentials, timeout): `nexus profile --help`.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Start the demo services and Nexus in one process, register the example patterns and run one.
    Demo(demo::DemoArgs),
    /// Register, validate, list and show patterns; their versions, diffs, forks, sharing and stars.
    #[command(subcommand)]
    Pattern(PatternCommand),
    /// Execute a pattern and print its step timeline.
    Run {
        /// Pattern name.
        name: String,
        /// Execution input: a JSON object, `@FILE` to read it from a file, or `-` for stdin.
        #[arg(long, short, default_value = "{}")]
        input: String,
        /// Exact version (default: latest).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Show each step and each streamed message live (ExecutePatternStream).
        #[arg(long, short)]
        follow: bool,
        /// A live status line on standard error while the execution runs: `auto` when standard
        /// error is a terminal (not with --json or --follow), `always`, `never`.
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto, env = "NEXUS_PROGRESS")]
        progress: ProgressMode,
        #[command(flatten)]
        target: Target,
    },
    /// List the catalog: services and their actions (`refresh` re-discovers backends).
    Services {
        #[command(subcommand)]
        command: Option<ServicesCommand>,
        #[command(flatten)]
        target: Target,
    },
    /// List recent executions, or show one.
    Executions {
        /// Show this execution in full.
        id: Option<String>,
        /// Only executions of this pattern.
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Query the knowledge graph: impact of an action, lineage of a pattern, a node's neighbours.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Publish events, or follow them live.
    #[command(subcommand)]
    Event(EventCommand),
    /// Patterns proposed from what your tenant really runs: composites, shared sub-patterns,
    /// improvements (each a complete document that validates; nothing is registered).
    Suggest {
        /// Only suggestions involving this pattern.
        #[arg(long)]
        pattern: Option<String>,
        /// Only these kinds: composite, shared_subpattern, retry_policy, parallelize,
        /// unread_output (repeatable).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Least executions a suggestion rests on.
        #[arg(long)]
        min_support: Option<u32>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print each suggestion's document in full (YAML).
        #[arg(long)]
        show: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Synthesize patterns from a goal over the catalog, each type-checked (nothing is
    /// registered: review one, then `nexus pattern register`).
    Generate {
        /// The goal in words: "create a user and send them a welcome email".
        goal: Option<String>,
        /// An input field of the pattern, `NAME` or `NAME:TYPE` (repeatable; TYPE a proto scalar
        /// such as string or int64, or a message name).
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// A field the output must have, `NAME` or `NAME:TYPE` (repeatable).
        #[arg(long = "output", short = 'o')]
        outputs: Vec<String>,
        /// An action the pattern must call (repeatable).
        #[arg(long = "use")]
        use_actions: Vec<String>,
        /// The action of the last step.
        #[arg(long)]
        end_with: Option<String>,
        /// The generated pattern's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 3)]
        limit: u32,
        /// Write the best candidate's YAML to this file.
        #[arg(long)]
        save: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Show the identity the server sees for these credentials.
    Whoami {
        #[command(flatten)]
        target: Target,
    },
    /// Create, list and revoke API keys (directly in the store, no server needed).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The audit log: refused calls (who, what, which resource, why, when), newest first, read
    /// from the store.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Machine-readable JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: token::StoreArgs,
    },
}

#[derive(Subcommand)]
enum ServicesCommand {
    /// Re-discover a backend (every backend without NAME), swap the new catalog in and list, per
    /// pattern version, what no longer type-checks. Admins only. Exits with 1 when something
    /// breaks.
    Refresh {
        /// The backend's name (`--service NAME=URL`, `[[services]] name`).
        name: Option<String>,
        /// Report only: keep the current catalog.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum GraphCommand {
    /// Pattern versions that use an action (`package.Service/Method`), directly or through
    /// sub-patterns; or that are triggered by, wait for or emit an event type (`user.created`).
    Impact {
        /// The action, `package.Service/Method`, or the event type, `user.created` (prefixes
        /// `action:` and `event:` are accepted too).
        action: String,
        #[command(flatten)]
        target: Target,
    },
    /// The fork tree of a pattern, from its root source down to every fork of a fork.
    Lineage {
        /// Pattern name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// The nodes within `--depth` edges of a node.
    #[command(visible_alias = "neighbors")]
    Neighbours {
        /// Node id: `pattern:NAME@VERSION`, `action:package.Service/Method`, `service:package.Service`,
        /// `event:TYPE` or `owner:TENANT/SUBJECT`.
        node: String,
        /// How many edges away (1 to 3; default 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
        depth: Option<u32>,
        #[command(flatten)]
        target: Target,
    },
}

/// Who may see a pattern.
#[derive(Clone, Copy, ValueEnum)]
pub enum Visibility {
    /// Its owner (and admins of their tenant).
    Private,
    /// Everyone in the owner's tenant.
    Tenant,
    /// Everyone.
    Public,
}

impl Visibility {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Tenant => "tenant",
            Self::Public => "public",
        }
    }
}

/// Order of `pattern list`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Sort {
    /// Best match first with --query, by name without.
    Relevance,
    /// Stars, then executions.
    Popularity,
    /// Alphabetical.
    Name,
    /// Most recently updated first.
    Recent,
}

impl From<Sort> for nexus_core::pb::PatternSort {
    fn from(sort: Sort) -> Self {
        match sort {
            Sort::Relevance => Self::Relevance,
            Sort::Popularity => Self::Popularity,
            Sort::Name => Self::Name,
            Sort::Recent => Self::Recent,
        }
    }
}

#[derive(Subcommand)]
enum PatternCommand {
    /// Validate and register pattern files (YAML or JSON).
    Register {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Type-check pattern files against the catalog without registering them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List registered patterns (latest version of each).
    ///
    /// Without --page-size or --page-token every page is fetched (--json prints an array of
    /// patterns); with either, one page is fetched and the next page token printed (--json prints
    /// the ListPatternsResponse).
    List {
        /// Free-text search in names, descriptions and tags.
        #[arg(long, short)]
        query: Option<String>,
        /// Only patterns of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only patterns with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only patterns whose latest version calls this action (`package.Service/Method`).
        #[arg(long)]
        action: Option<String>,
        /// Order of the results (default: relevance with --query, name without).
        #[arg(long, value_enum)]
        sort: Option<Sort>,
        /// Fetch one page of this many patterns.
        #[arg(long)]
        page_size: Option<u32>,
        /// Fetch the page this token (printed by the previous page) points at.
        #[arg(long)]
        page_token: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show a registered pattern (or a local file) as YAML, its triggers and event steps first
    /// (as comments).
    Show {
        /// A pattern name, or a path to a pattern file.
        name: String,
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Every version of a pattern with deprecation and usage, and who owns and shares it.
    Versions {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Deprecate a version (it still runs by exact version, but is no longer the latest).
    Deprecate {
        name: String,
        version: String,
        /// Why, and what to use instead.
        #[arg(long)]
        reason: Option<String>,
        /// Lift the deprecation instead.
        #[arg(long, conflicts_with = "reason")]
        undo: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Step-level changes from version V1 to V2 (of NAME, or of --to-name).
    Diff {
        name: String,
        /// The version compared from.
        v1: String,
        /// The version compared to.
        v2: String,
        /// Compare with V2 of this pattern (a fork) instead of NAME.
        #[arg(long)]
        to_name: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Copy a version under a new name that you own, recording where it came from.
    Fork {
        name: String,
        new_name: String,
        /// The version to fork (default: latest).
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Set who may see a pattern.
    Share {
        name: String,
        #[arg(value_enum)]
        visibility: Visibility,
        #[command(flatten)]
        target: Target,
    },
    /// Star a pattern (or unstar it).
    Star {
        name: String,
        #[arg(long)]
        unstar: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (gRPC, gRPC-Web, Connect JSON and CloudEvents on one port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Threads that run requests [default: one per core]. Fewer than the cores when Nexus
    /// shares the machine with its backends or its clients (see docs/config.md).
    #[arg(long, env = "NEXUS_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// A backend to plug in, as NAME=URL (descriptors by gRPC server reflection). Repeatable.
    #[arg(long = "service", value_name = "NAME=URL")]
    services: Vec<String>,
    /// nexus.toml with [[services]] and other settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the embedded store lives (default .nexus).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep patterns in memory only.
    #[arg(long)]
    in_memory: bool,
    /// Share state with other replicas in PostgreSQL (postgres://user:password@host/db).
    #[arg(long, env = "NEXUS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Refuse every call without valid credentials (API keys from `nexus token create`, or JWTs).
    #[arg(long)]
    require_auth: bool,
    /// Allow listening on a non-loopback address without --require-auth (anyone who can reach
    /// the port is an admin).
    #[arg(long)]
    insecure: bool,
    /// Serve TLS with this PEM certificate chain (with --tls-key); reloaded on SIGHUP and when
    /// the file changes. Also `[tls] cert_file` or NEXUS_TLS_CERT.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert. Also `[tls] key_file` or NEXUS_TLS_KEY.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let json = wants_json(&matches);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(matches!(cli.command, Command::Serve(_) | Command::Demo(_)), cli.log_format);
    let workers = match &cli.command {
        Command::Serve(args) => args.worker_threads,
        Command::Demo(args) => args.worker_threads,
        _ => None,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        runtime.worker_threads(n.into());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if !json {
                say_err!("error: {e:#}");
            } else if let Some(error) = exit::error_json(&e) {
                say!("{error}");
            }
            exit::code(exit::status_of(&e))
        }
    }
}

/// Whether the command line asked for `--json` (at any level of subcommands).
fn wants_json(matches: &clap::ArgMatches) -> bool {
    matches.try_get_one::<bool>("json").ok().flatten().copied().unwrap_or(false)
        || matches.subcommand().is_some_and(|(_, sub)| wants_json(sub))
}

fn init_tracing(server: bool, format: LogFormat) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Pattern(PatternCommand::Register { files, target }) => client::register(&target, &files).await,
        Command::Pattern(PatternCommand::Validate { files, target }) => client::validate(&target, &files).await,
        Command::Pattern(PatternCommand::List { query, owner, tag, action, sort, page_size, page_token, target }) => {
            let filter = client::ListFilter {
                query: query.unwrap_or_default(),
                owner: owner.unwrap_or_default(),
                tag: tag.unwrap_or_default(),
                action: action.unwrap_or_default(),
                sort: sort.map(nexus_core::pb::PatternSort::from).unwrap_or_default(),
            };
            client::list(&target, filter, page_size, page_token).await
        }
        Command::Pattern(PatternCommand::Show { name, version, target }) => client::show(&target, &name, version).await,
        Command::Pattern(PatternCommand::Versions { name, target }) => client::versions(&target, &name).await,
        Command::Pattern(PatternCommand::Deprecate { name, version, reason, undo, target }) => {
            client::deprecate(&target, &name, &version, reason, undo).await
        }
        Command::Pattern(PatternCommand::Diff { name, v1, v2, to_name, target }) => {
            client::diff(&target, &name, &v1, &v2, to_name).await
        }
        Command::Pattern(PatternCommand::Fork { name, new_name, version, target }) => {
            client::fork(&target, &name, &new_name, version).await
        }
        Command::Pattern(PatternCommand::Share { name, visibility, target }) => {
            client::share(&target, &name, visibility).await
        }
        Command::Pattern(PatternCommand::Star { name, unstar, target }) => client::star(&target, &name, unstar).await,
        Command::Run { name, input, version, idempotency_key, follow, progress, target } => {
            use std::io::IsTerminal as _;
            let live = match progress {
                ProgressMode::Always => true,
                ProgressMode::Never => false,
                ProgressMode::Auto => std::io::stderr().is_terminal(),
            };
            if follow {
                client::follow(&target, &name, &input, version).await
            } else {
                client::run(&target, &name, &input, version, idempotency_key, live && !target.json).await
            }
        }
        Command::Services { command: None, target } => client::services(&target).await,
        Command::Services { command: Some(ServicesCommand::Refresh { name, dry_run }), target } => {
            client::refresh(&target, name, dry_run).await
        }
        Command::Executions { id, pattern, limit, target } => client::executions(&target, id, pattern, limit).await,
        Command::Graph(GraphCommand::Impact { action, target }) => {
            client::graph(&target, client::GraphQuery::Impact(action), None).await
        }
        Command::Graph(GraphCommand::Lineage { name, target }) => {
            client::graph(&target, client::GraphQuery::Lineage(name), None).await
        }
        Command::Graph(GraphCommand::Neighbours { node, depth, target }) => {
            client::graph(&target, client::GraphQuery::Neighbourhood(node), depth).await
        }
        Command::Whoami { target } => client::whoami(&target).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "nexus",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)?;
            Ok(())
        }
        Command::Suggest { pattern, kinds, min_support, limit, show, target } => {
            client::suggest(&target, pattern, &kinds, min_support, limit, show).await
        }
        Command::Generate { goal, inputs, outputs, use_actions, end_with, name, limit, save, target } => {
            let goal = client::GoalArgs { goal, inputs, outputs, use_actions, end_with, name, limit, save };
            client::generate(&target, goal).await
        }
        Command::Event(EventCommand::Publish { event_type, data, id, source, subject, target }) => {
            client::publish_event(&target, event_type, &data, id, source, subject).await
        }
        Command::Event(EventCommand::Tail { types, filter, target }) => {
            client::tail_events(&target, types, filter).await
        }
        Command::Profile(ProfileCommand::List { target }) => profile::list(&target),
        Command::Profile(ProfileCommand::Show { target }) => profile::show(&target),
        Command::Token(command) => token::run(command).await,
        Command::Audit { limit, json, store } => token::audit(&store, limit, json).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    for s in &args.services {
        config.services.push(ServiceConfig::from_flag(s)?);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.in_memory {
        config.in_memory = true;
    }
    if let Some(url) = args.database_url {
        config.store.url = Some(url);
    }
    if args.require_auth {
        config.auth.require_auth = true;
    }
    if args.insecure {
        config.auth.insecure = true;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
    }
    let store = match (&config.store.url, config.in_memory) {
        (Some(url), _) => nexus_store::redact_url(url),
        (None, true) => "in memory".to_string(),
        (None, false) => config.data_dir.display().to_string(),
    };
    let nexus = nexus_server::Nexus::start(config).await.context("nexus could not start")?;
    println!(
        "nexus listening on {}://{} (store: {store}, {} services)",
        nexus.scheme(),
        nexus.local_addr(),
        nexus.service_count()
    );
    tokio::select! {
        r = shutdown_signal() => r?,
        _ = std::future::pending::<()>() => {}
    }
    let grace = nexus.shutdown_grace();
    println!("shutting down: durable executions handed back to the cluster, ephemeral ones get {grace:?} to finish");
    nexus.shutdown(grace).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
