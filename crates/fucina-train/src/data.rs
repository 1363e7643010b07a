//! Resolves a run's `[data]` section to a tokenizer and token datasets.

use crate::config::{builtin_subdir, RunConfig};
use anyhow::{bail, Context, Result};
use fucina_data::{corpus, prepare, PrepareMeta, PrepareOptions, TextTokenizer, TokenDataset};
use fucina_dist::Communicator;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const BUILTIN: &str = "builtin";

pub struct RunData {
    pub tokenizer: TextTokenizer,
    /// `data.dir` (or `data.train_files`) as one source of weight 1, or the `data.sources`.
    pub sources: Vec<RunSource>,
    /// Whether the run names `data.sources`: validation then reports a loss per source.
    pub mixture: bool,
}

pub struct RunSource {
    pub name: String,
    pub weight: f64,
    pub train: TokenDataset,
    pub val: Option<TokenDataset>,
}

pub fn builtin_tokenizer() -> Result<TextTokenizer> {
    let json = corpus::builtin_tokenizer_json().context(
        "this build has no built-in tokenizer (crates/fucina-data/corpus/tokenizer.json)",
    )?;
    TextTokenizer::from_json_str(json)
}

pub fn load_tokenizer(spec: &str) -> Result<TextTokenizer> {
    if spec == BUILTIN {
        builtin_tokenizer()
    } else {
        TextTokenizer::from_file(spec)
    }
}

/// Tokenises the built-in corpus (its `languages`, or all) once per output directory; rank 0
/// writes, the others wait.
fn builtin_dataset_dir(
    out_dir: &Path,
    languages: &[String],
    comm: &dyn Communicator,
) -> Result<PathBuf> {
    let dir = out_dir.join("data").join(builtin_subdir(languages));
    if comm.is_root() && !dir.join("meta.json").is_file() {
        let text_dir = out_dir.join("data").join("builtin-text");
        let mut files = corpus::write_builtin_corpus(&text_dir)?;
        files.retain(|f| {
            let lang = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            languages.is_empty() || languages.iter().any(|l| l == lang)
        });
        let tokenizer = builtin_tokenizer()?;
        let opts = PrepareOptions {
            val_fraction: 0.05,
            progress: false,
            ..Default::default()
        };
        prepare(&tokenizer, &files, &dir, &opts).context("cannot prepare the built-in corpus")?;
        std::fs::remove_dir_all(&text_dir).ok();
    }
    comm.barrier()?;
    Ok(dir)
}

/// Shards made with one tokenizer and trained with another model's would train on noise with
/// no error anywhere else: the tokenizer recorded by `prepare` must be the run's.
fn check_tokenizer(config: &RunConfig, dir: &Path, tokenizer: &TextTokenizer) -> Result<()> {
    if config.hf_dir()?.is_some() && config.data.tokenizer == BUILTIN {
        bail!(
            "model.hf is set but data.tokenizer is the built-in one; set data.tokenizer to the model's tokenizer.json"
        );
    }
    if !dir.join(fucina_data::prepare::META_FILE).is_file() {
        return Ok(());
    }
    let meta = PrepareMeta::read(dir)?;
    if meta.tokenizer_sha256 != tokenizer.sha256() {
        bail!(
            "{} was prepared with another tokenizer than data.tokenizer = {} (SHA-256 {} vs {}); prepare the data with the tokenizer you train with",
            dir.display(),
            config.data.tokenizer,
            &meta.tokenizer_sha256[..12.min(meta.tokenizer_sha256.len())],
            &tokenizer.sha256()[..12]
        );
    }
    Ok(())
}

/// `dir`, or for `builtin` the run's tokenised copy of the built-in corpus (`languages` of it,
/// or all).
fn resolve_dir(
    dir: &str,
    languages: &[String],
    config: &RunConfig,
    comm: &dyn Communicator,
) -> Result<PathBuf> {
    match dir {
        BUILTIN => builtin_dataset_dir(&config.out_dir, languages, comm),
        other => Ok(PathBuf::from(other)),
    }
}

/// Validation shards of `dir`, if it has any; rows of another length would silently yield no
/// validation batches, so they are an error.
fn open_val(dir: &Path, seq_len: usize) -> Result<Option<TokenDataset>> {
    let val = TokenDataset::open_glob_dir(dir, "val").ok();
    if let Some(val) = &val {
        val.check_seq_len(seq_len)
            .context("the validation shards")?;
    }
    Ok(val)
}

pub fn load(config: &RunConfig, comm: &dyn Communicator) -> Result<RunData> {
    let data = &config.data;
    let tokenizer = load_tokenizer(&data.tokenizer)?;
    let sources = if data.sources.is_empty() {
        vec![single_source(config, comm, &tokenizer)?]
    } else {
        let mut sources = Vec::with_capacity(data.sources.len());
        for (i, source) in data.sources.iter().enumerate() {
            let at = || format!("data.sources[{i}] (dir = {:?})", source.dir);
            // Only `data.dir` chooses languages; the config refuses them beside sources.
            let dir = resolve_dir(&source.dir, &[], config, comm)?;
            if !dir.is_dir() {
                bail!(
                    "{}: {} is not a directory; give a `fucina prepare` output directory or \"builtin\"",
                    at(),
                    dir.display()
                );
            }
            check_tokenizer(config, &dir, &tokenizer).with_context(at)?;
            let train = TokenDataset::open_glob_dir(&dir, "train")
                .with_context(|| format!("{} holds no training shards", at()))?;
            let val = open_val(&dir, data.seq_len).with_context(at)?;
            sources.push(RunSource {
                name: source.name(),
                weight: source.weight,
                train,
                val,
            });
        }
        sources
    };
    let model = config.model_config()?;
    let vocab = model.vocab_size as u32;
    let shard_vocab = sources
        .iter()
        .flat_map(|s| [Some(&s.train), s.val.as_ref()])
        .flatten()
        .filter_map(TokenDataset::vocab_size)
        .max()
        .unwrap_or(0);
    if shard_vocab > vocab || tokenizer.vocab_size() > vocab {
        bail!(
            "the model's vocab_size ({vocab}) is smaller than the data's ({}); set model.vocab_size to at least that",
            shard_vocab.max(tokenizer.vocab_size())
        );
    }
    Ok(RunData {
        tokenizer,
        sources,
        mixture: !data.sources.is_empty(),
    })
}

/// `data.dir` or `data.train_files` / `data.val_files`.
fn single_source(
    config: &RunConfig,
    comm: &dyn Communicator,
    tokenizer: &TextTokenizer,
) -> Result<RunSource> {
    let data = &config.data;
    let dir = match data.dir.as_str() {
        "" => None,
        other => Some(resolve_dir(other, &data.languages, config, comm)?),
    };
    if let Some(dir) = &dir {
        check_tokenizer(config, dir, tokenizer)?;
    }
    let train = if !data.train_files.is_empty() {
        TokenDataset::open(&data.train_files)?
    } else if let Some(dir) = &dir {
        TokenDataset::open_glob_dir(dir, "train")
            .with_context(|| format!("data.dir {} holds no training shards", dir.display()))?
    } else {
        bail!("set data.dir (a `fucina prepare` output, or \"builtin\") or data.train_files");
    };
    let val = if !data.val_files.is_empty() {
        let val = TokenDataset::open(&data.val_files)?;
        val.check_seq_len(data.seq_len)
            .context("the validation shards")?;
        Some(val)
    } else {
        match &dir {
            Some(d) => open_val(d, data.seq_len)?,
            None => None,
        }
    };
    let name = dir
        .as_ref()
        .and_then(|d| d.file_name())
        .map_or_else(|| "train".into(), |n| n.to_string_lossy().into_owned());
    Ok(RunSource {
        name,
        weight: 1.0,
        train,
        val,
    })
}

/// The end-of-text token `data.document_mask` cuts documents at: the one every source's
/// shards record.
pub fn document_eos(train: &[(Arc<TokenDataset>, f64)]) -> Result<u32> {
    let ids: Vec<Option<u32>> = train.iter().map(|(d, _)| d.eos_id()).collect();
    match ids.first() {
        Some(&Some(eos)) if ids.iter().all(|&id| id == Some(eos)) => Ok(eos),
        _ if ids.contains(&None) => anyhow::bail!(
            "data.document_mask = true cuts documents at the end-of-text token, but the \
             training shards record none (shards from another tool, e.g. llm.c .bin files); \
             prepare the data with `fucina prepare`, or leave data.document_mask out"
        ),
        _ => anyhow::bail!(
            "data.document_mask = true: the sources' shards record different end-of-text \
             tokens ({ids:?}); a mixture must share one tokenizer"
        ),
    }
}
