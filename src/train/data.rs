//! Training data: byte-level text, llm.c token shards, MNIST IDX, CIFAR-10 binary. Everything is
//! read into memory up front and checked, so a bad file fails before training starts.

use crate::options::DataSpec;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::{Path, PathBuf};

/// A data error, said in one sentence that names the file.
pub type DataResult<T> = Result<T, String>;

/// Token streams for a language model.
pub struct TokenData {
    pub train: Vec<u32>,
    pub valid: Vec<u32>,
    pub vocab_used: u32,
    /// How the tokens were made, for the run record.
    pub tokenizer: String,
}

/// Images for a classifier, as f32 in [batch, channels, h, w] order, normalized.
pub struct ImageData {
    pub train_x: Vec<f32>,
    pub train_y: Vec<u32>,
    pub test_x: Vec<f32>,
    pub test_y: Vec<u32>,
    pub channels: usize,
    pub size: usize,
    pub classes: u32,
}

impl ImageData {
    pub fn pixels(&self) -> usize {
        self.channels * self.size * self.size
    }
}

pub enum Data {
    Tokens(TokenData),
    Images(ImageData),
    Examples(ExampleData),
}

/// Prompt-response examples for fine-tuning, tokenized.
pub struct ExampleData {
    pub train: Vec<Example>,
    pub valid: Vec<Example>,
    pub vocab_used: u32,
    /// How the tokens were made, and from which file, for messages and the run record.
    pub tokenizer: String,
    pub file: PathBuf,
}

/// One example: prompt then response tokens (and the end-of-text token, where the tokenizer
/// has one); the loss is on the tokens from `response_from` on.
#[derive(Debug, Clone)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub response_from: usize,
    /// Its line in its file (from 1), for messages.
    pub line: usize,
}

/// Which fields of a jsonl record are the prompt and the response, and how the prompt is laid
/// out.
struct Fields<'a> {
    prompt: &'a str,
    response: &'a str,
    chat: bool,
}

/// The examples of a jsonl file and its validation file; without one, the last tenth of the
/// examples (at least one) validates and is not trained on.
fn examples(
    train: &Path,
    valid: Option<&Path>,
    fields: &Fields,
    codec: &crate::import::tokenizer::TextCodec,
) -> DataResult<Data> {
    let mut train_set = jsonl_examples(train, fields, codec)?;
    let valid_set = match valid {
        Some(v) => jsonl_examples(v, fields, codec)?,
        None => {
            let keep = train_set.len() - (train_set.len() / 10).max(1).min(train_set.len() - 1);
            train_set.split_off(keep)
        }
    };
    let vocab_used = train_set
        .iter()
        .chain(&valid_set)
        .flat_map(|e| e.tokens.iter())
        .max()
        .map_or(0, |m| m + 1);
    Ok(Data::Examples(ExampleData {
        train: train_set,
        valid: valid_set,
        vocab_used,
        tokenizer: codec.describe(),
        file: train.to_path_buf(),
    }))
}

fn jsonl_examples(
    path: &Path,
    fields: &Fields,
    codec: &crate::import::tokenizer::TextCodec,
) -> DataResult<Vec<Example>> {
    let text = String::from_utf8(read(path)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: String| format!("{} line {}: {what}", path.display(), i + 1);
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let field = |name: &str| {
            record[name]
                .as_str()
                .map(String::from)
                .ok_or_else(|| at(format!("no string field `{name}`")))
        };
        let (prompt, response) = (field(fields.prompt)?, field(fields.response)?);
        let prompt = match fields.chat {
            true => codec.chat(&prompt).map_err(at)?,
            false => prompt,
        };
        let mut tokens = codec.encode(&prompt).map_err(at)?;
        let response_from = tokens.len();
        tokens.extend(codec.encode_continuation(&response).map_err(at)?);
        tokens.extend(codec.eos());
        if response_from == 0 || tokens.len() == response_from {
            return Err(at("the prompt and the response must both have text".into()));
        }
        out.push(Example {
            tokens,
            response_from,
            line: i + 1,
        });
    }
    if out.is_empty() {
        return Err(format!("{} has no examples", path.display()));
    }
    Ok(out)
}

fn read(path: &Path) -> DataResult<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(bytes)
}

/// Resolves a data path: relative paths are relative to the spec's folder; a path that exists
/// only relative to the working directory is accepted too.
pub fn locate(path: &Path, spec_dir: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let beside = spec_dir.join(path);
    if beside.exists() || !path.exists() {
        beside
    } else {
        path.to_path_buf()
    }
}

/// Without a validation file, the last tenth of the training tokens validates and is not trained
/// on: a validation loss measured on text the model also learned from would be optimistic.
pub fn hold_out_tail(mut tokens: Vec<u32>) -> (Vec<u32>, Vec<u32>) {
    let valid = tokens.split_off(tokens.len() * 9 / 10);
    (tokens, valid)
}

/// The data spec with every path made absolute (relative ones start at the spec's folder), as a
/// run records it: a resume or an evaluation from another folder finds the same files.
pub fn absolute(spec: &DataSpec, spec_dir: &Path) -> DataSpec {
    let at = |p: &PathBuf| {
        let p = locate(p, spec_dir);
        std::fs::canonicalize(&p)
            .or_else(|_| std::path::absolute(&p))
            .unwrap_or(p)
    };
    match spec {
        DataSpec::Text {
            train,
            valid,
            tokenizer,
        } => DataSpec::Text {
            train: at(train),
            valid: valid.as_ref().map(at),
            tokenizer: tokenizer.as_ref().map(at),
        },
        DataSpec::Jsonl {
            train,
            valid,
            prompt,
            response,
            chat,
            tokenizer,
        } => DataSpec::Jsonl {
            train: at(train),
            valid: valid.as_ref().map(at),
            prompt: prompt.clone(),
            response: response.clone(),
            chat: *chat,
            tokenizer: tokenizer.as_ref().map(at),
        },
        DataSpec::Tokens { dir } => DataSpec::Tokens { dir: at(dir) },
        DataSpec::Mnist { dir } => DataSpec::Mnist { dir: at(dir) },
        DataSpec::Cifar10 { dir } => DataSpec::Cifar10 { dir: at(dir) },
    }
}

/// The paths the spec writes: the text files (training, validation, tokenizer) or the folder.
fn written_paths(spec: &DataSpec) -> Vec<&PathBuf> {
    match spec {
        DataSpec::Text {
            train,
            valid,
            tokenizer,
        }
        | DataSpec::Jsonl {
            train,
            valid,
            tokenizer,
            ..
        } => [Some(train), valid.as_ref(), tokenizer.as_ref()]
            .into_iter()
            .flatten()
            .collect(),
        DataSpec::Tokens { dir } | DataSpec::Mnist { dir } | DataSpec::Cifar10 { dir } => {
            vec![dir]
        }
    }
}

/// The first path of `spec` that is relative, if any.
pub fn relative_path(spec: &DataSpec) -> Option<&Path> {
    written_paths(spec)
        .into_iter()
        .find(|p| p.is_relative())
        .map(PathBuf::as_path)
}

/// Every file [`load`] reads for `spec` (with absolute paths), in the order it reads them.
pub fn files(spec: &DataSpec) -> DataResult<Vec<PathBuf>> {
    Ok(match spec {
        DataSpec::Text { .. } => written_paths(spec).into_iter().cloned().collect(),
        // A HuggingFace directory's tokenizer is its tokenizer.json.
        DataSpec::Jsonl { .. } => written_paths(spec)
            .into_iter()
            .map(|p| match p.is_dir() {
                true => p.join("tokenizer.json"),
                false => p.clone(),
            })
            .collect(),
        DataSpec::Tokens { dir } => {
            let mut all = shard_files(dir, "train")?;
            all.extend(shard_files(dir, "val")?);
            all
        }
        DataSpec::Mnist { dir } => MNIST_FILES.iter().map(|f| dir.join(f)).collect(),
        DataSpec::Cifar10 { dir } => cifar10_files(dir),
    })
}

/// Every file the data spec reads, in order, with its SHA-256: what a run records, and what a
/// resume compares, so that a resume never goes on with other data.
pub fn fingerprint(spec: &DataSpec) -> DataResult<Vec<(PathBuf, String)>> {
    files(spec)?
        .into_iter()
        .map(|f| super::digest::of_file(&f).map(|sum| (f, sum)))
        .collect()
}

pub fn load(spec: &DataSpec, spec_dir: &Path) -> DataResult<Data> {
    let at = |p: &PathBuf| locate(p, spec_dir);
    match spec {
        DataSpec::Text {
            train,
            valid,
            tokenizer: None,
        } => byte_text(&at(train), valid.as_ref().map(at).as_deref()),
        DataSpec::Text {
            train,
            valid,
            tokenizer: Some(t),
        } => tokenized_text(&at(train), valid.as_ref().map(at).as_deref(), &at(t)),
        DataSpec::Jsonl {
            train,
            valid,
            prompt,
            response,
            chat,
            tokenizer,
        } => {
            // Without a tokenizer (and no base to take it from), byte-level tokens, as text().
            let codec = match tokenizer {
                Some(t) => crate::import::tokenizer::TextCodec::from_path(&at(t))?,
                None => crate::import::tokenizer::TextCodec::Bytes,
            };
            let fields = Fields {
                prompt,
                response,
                chat: *chat,
            };
            examples(
                &at(train),
                valid.as_ref().map(at).as_deref(),
                &fields,
                &codec,
            )
        }
        DataSpec::Tokens { dir } => llmc_shards(&at(dir)),
        DataSpec::Mnist { dir } => mnist(&at(dir)),
        DataSpec::Cifar10 { dir } => cifar10(&at(dir)),
    }
}

/// Text as byte-level tokens.
fn byte_text(train: &Path, valid: Option<&Path>) -> DataResult<Data> {
    let bytes =
        |p: &Path| -> DataResult<Vec<u32>> { Ok(read(p)?.iter().map(|&b| b as u32).collect()) };
    let (train, valid) = match valid {
        Some(v) => (bytes(train)?, bytes(v)?),
        None => hold_out_tail(bytes(train)?),
    };
    Ok(Data::Tokens(TokenData {
        train,
        valid,
        vocab_used: 256,
        tokenizer: "bytes".into(),
    }))
}

/// Text through a HuggingFace tokenizer.json.
fn tokenized_text(train: &Path, valid: Option<&Path>, tokenizer: &Path) -> DataResult<Data> {
    let tok = tokenizers::Tokenizer::from_file(tokenizer).map_err(|e| {
        format!(
            "{} is not a tokenizer.json laxc can read: {e}",
            tokenizer.display()
        )
    })?;
    let encode = |path: &Path| -> DataResult<Vec<u32>> {
        let text = String::from_utf8(read(path)?)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let mut ids = Vec::new();
        // Paragraph by paragraph: bounded memory, and the same ids as a whole-file encode for
        // pre-tokenizers that split on whitespace.
        for line in text.lines() {
            let enc = tok
                .encode(line, false)
                .map_err(|e| format!("cannot tokenize {}: {e}", path.display()))?;
            ids.extend_from_slice(enc.get_ids());
        }
        Ok(ids)
    };
    let (train, valid) = match valid {
        Some(v) => (encode(train)?, encode(v)?),
        None => hold_out_tail(encode(train)?),
    };
    Ok(Data::Tokens(TokenData {
        vocab_used: tok.get_vocab_size(true) as u32,
        train,
        valid,
        tokenizer: format!("tokenizer {}", tokenizer.display()),
    }))
}

/// The `*NEEDLE*.bin` shards of a folder, in name order.
fn shard_files(dir: &Path, needle: &str) -> DataResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "bin")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(needle))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *{needle}*.bin shards in {}", dir.display()));
    }
    Ok(files)
}

/// nanoGPT / llm.c shards: every `*train*.bin` and `*val*.bin` in a folder, in name order.
fn llmc_shards(dir: &Path) -> DataResult<Data> {
    let shards = |needle: &str| -> DataResult<Vec<u32>> {
        let mut out = Vec::new();
        for f in shard_files(dir, needle)? {
            out.extend(llmc_shard(&f)?);
        }
        Ok(out)
    };
    let train = shards("train")?;
    let valid = shards("val")?;
    let vocab_used = train.iter().chain(&valid).copied().max().unwrap_or(0) + 1;
    Ok(Data::Tokens(TokenData {
        train,
        valid,
        vocab_used,
        tokenizer: "llm.c shards".into(),
    }))
}

/// MNIST's four IDX files: training images and labels, test images and labels.
const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// MNIST's four IDX files, normalized as usual.
fn mnist(dir: &Path) -> DataResult<Data> {
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES.map(|f| dir.join(f));
    let (train_x, size) = idx_images(&train_images)?;
    let train_y = idx_labels(&train_labels)?;
    let (test_x, _) = idx_images(&test_images)?;
    let test_y = idx_labels(&test_labels)?;
    check_pairs(&train_x, &train_y, size * size, dir)?;
    check_pairs(&test_x, &test_y, size * size, dir)?;
    let norm = |v: Vec<u8>| {
        v.into_iter()
            .map(|p| (p as f32 / 255.0 - 0.1307) / 0.3081)
            .collect()
    };
    Ok(Data::Images(ImageData {
        train_x: norm(train_x),
        train_y,
        test_x: norm(test_x),
        test_y,
        channels: 1,
        size,
        classes: 10,
    }))
}

/// CIFAR-10's five training batches, then its test batch.
fn cifar10_files(dir: &Path) -> Vec<PathBuf> {
    (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .chain([dir.join("test_batch.bin")])
        .collect()
}

/// CIFAR-10's five training batches and its test batch (binary version).
fn cifar10(dir: &Path) -> DataResult<Data> {
    let mut train_x = Vec::new();
    let mut train_y = Vec::new();
    let files = cifar10_files(dir);
    let (test, train) = files.split_last().expect("six files");
    for batch in train {
        let (x, y) = cifar_batch(batch)?;
        train_x.extend(x);
        train_y.extend(y);
    }
    let (test_x, test_y) = cifar_batch(test)?;
    Ok(Data::Images(ImageData {
        train_x,
        train_y,
        test_x,
        test_y,
        channels: 3,
        size: 32,
        classes: 10,
    }))
}

fn check_pairs(x: &[u8], y: &[u32], pixels: usize, dir: &Path) -> DataResult<()> {
    if x.len() / pixels != y.len() {
        return Err(format!(
            "{}: {} images but {} labels",
            dir.display(),
            x.len() / pixels,
            y.len()
        ));
    }
    Ok(())
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// IDX images: magic 2051, count, rows, cols (big-endian u32), then bytes.
fn idx_images(path: &Path) -> DataResult<(Vec<u8>, usize)> {
    let b = read(path)?;
    if b.len() < 16 || be_u32(&b, 0) != 2051 {
        return Err(format!(
            "{} is not an IDX image file (magic 2051)",
            path.display()
        ));
    }
    let (n, rows, cols) = (
        be_u32(&b, 4) as usize,
        be_u32(&b, 8) as usize,
        be_u32(&b, 12) as usize,
    );
    if n == 0 || rows == 0 || cols == 0 {
        return Err(format!(
            "{}: holds {n} images of {rows}×{cols} pixels; a data set needs images with pixels",
            path.display()
        ));
    }
    if rows != cols || b.len() != 16 + n * rows * cols {
        return Err(format!(
            "{}: header says {n} images of {rows}×{cols} but the file has {} bytes",
            path.display(),
            b.len()
        ));
    }
    Ok((b[16..].to_vec(), rows))
}

fn idx_labels(path: &Path) -> DataResult<Vec<u32>> {
    let b = read(path)?;
    if b.len() < 8 || be_u32(&b, 0) != 2049 {
        return Err(format!(
            "{} is not an IDX label file (magic 2049)",
            path.display()
        ));
    }
    let n = be_u32(&b, 4) as usize;
    if n == 0 {
        return Err(format!("{}: holds no labels", path.display()));
    }
    if b.len() != 8 + n {
        return Err(format!(
            "{}: header says {n} labels, file is short",
            path.display()
        ));
    }
    let labels: Vec<u32> = b[8..].iter().map(|&l| l as u32).collect();
    if labels.iter().any(|&l| l > 9) {
        return Err(format!("{}: labels must be 0..9", path.display()));
    }
    Ok(labels)
}

/// CIFAR-10 binary: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32).
fn cifar_batch(path: &Path) -> DataResult<(Vec<f32>, Vec<u32>)> {
    let b = read(path)?;
    const REC: usize = 1 + 3072;
    if b.len() % REC != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of 3073-byte CIFAR-10 records",
            path.display(),
            b.len()
        ));
    }
    let mean = [0.4914f32, 0.4822, 0.4465];
    let std = [0.2470f32, 0.2435, 0.2616];
    let mut x = Vec::with_capacity(b.len() / REC * 3072);
    let mut y = Vec::with_capacity(b.len() / REC);
    for rec in b.chunks_exact(REC) {
        if rec[0] > 9 {
            return Err(format!("{}: label {} out of range", path.display(), rec[0]));
        }
        y.push(rec[0] as u32);
        for (i, &p) in rec[1..].iter().enumerate() {
            let c = i / 1024;
            x.push((p as f32 / 255.0 - mean[c]) / std[c]);
        }
    }
    Ok((x, y))
}

/// llm.c shard: 256 little-endian i32 header (magic 20240520, version 1, token count), then
/// u16 tokens.
fn llmc_shard(path: &Path) -> DataResult<Vec<u32>> {
    let b = read(path)?;
    if b.len() < 1024 {
        return Err(format!(
            "{} is too short for an llm.c shard header",
            path.display()
        ));
    }
    let word = |i: usize| i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    if word(0) != 20240520 || word(1) != 1 {
        return Err(format!(
            "{} is not an llm.c token shard (magic 20240520, version 1)",
            path.display()
        ));
    }
    let n = word(2) as usize;
    if b.len() != 1024 + 2 * n {
        return Err(format!(
            "{}: header says {n} tokens but the file has {} bytes of tokens",
            path.display(),
            b.len() - 1024
        ));
    }
    Ok(b[1024..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect())
}

/// `count` random windows of `seq + 1` tokens (inputs and shifted targets): window `first + i`
/// of the run starts where `window_seed(first + i)` says, so a sample does not depend on how
/// samples are grouped into micro-batches (batch 4 equals batch 2 with two accumulation steps).
pub fn token_batch(
    tokens: &[u32],
    first: u64,
    count: usize,
    seq: usize,
    window_seed: impl Fn(u64) -> u64,
) -> Vec<i64> {
    let max_start = tokens.len() - seq - 1;
    let mut out = Vec::with_capacity(count * (seq + 1));
    for i in 0..count as u64 {
        let mut rng = StdRng::seed_from_u64(window_seed(first + i));
        let s = rng.random_range(0..=max_start);
        out.extend(tokens[s..s + seq + 1].iter().map(|&t| t as i64));
    }
    out
}

/// The `index`-th validation batch: consecutive windows, the same every time.
pub fn token_eval_batch(
    tokens: &[u32],
    batch: usize,
    seq: usize,
    index: usize,
) -> Option<Vec<i64>> {
    let start = index * batch * seq;
    if start + batch * seq + 1 > tokens.len() {
        return None;
    }
    let mut out = Vec::with_capacity(batch * (seq + 1));
    for b in 0..batch {
        let s = start + b * seq;
        out.extend(tokens[s..s + seq + 1].iter().map(|&t| t as i64));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_validation_file_the_tail_is_held_out_not_trained_on() {
        let dir = std::env::temp_dir().join(format!("laxc-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(dir.join("train.txt"), &text).unwrap();
        let spec = DataSpec::Text {
            train: "train.txt".into(),
            valid: None,
            tokenizer: None,
        };
        let Data::Tokens(t) = load(&spec, &dir).unwrap() else {
            panic!("text gives tokens")
        };
        let all: Vec<u32> = text.iter().map(|&b| b as u32).collect();
        assert_eq!(t.train, all[..900]);
        assert_eq!(t.valid, all[900..]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn idx(magic: u32, dims: &[u32], body: usize) -> Vec<u8> {
        let mut b: Vec<u8> = magic.to_be_bytes().to_vec();
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(vec![0u8; body]);
        b
    }

    /// Empty or pixel-less MNIST files are an error naming the file, not a panic (a division
    /// by zero) or a run that trains into NaN.
    #[test]
    fn mnist_without_images_or_pixels_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("laxc-mnist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
        write("train-labels-idx1-ubyte", idx(2049, &[2], 2));
        write("t10k-images-idx3-ubyte", idx(2051, &[2, 2, 2], 8));
        write("t10k-labels-idx1-ubyte", idx(2049, &[2], 2));
        let spec = DataSpec::Mnist { dir: dir.clone() };
        for (images, what) in [
            (idx(2051, &[2, 0, 0], 0), "0×0 pixels"),
            (idx(2051, &[0, 28, 28], 0), "holds 0 images"),
        ] {
            write("train-images-idx3-ubyte", images);
            let Err(e) = load(&spec, &dir) else {
                panic!("accepted {what}")
            };
            assert!(
                e.contains("train-images-idx3-ubyte") && e.contains(what),
                "{e}"
            );
        }
        write("train-images-idx3-ubyte", idx(2051, &[2, 2, 2], 8));
        write("train-labels-idx1-ubyte", idx(2049, &[0], 0));
        let Err(e) = load(&spec, &dir) else {
            panic!("accepted no labels")
        };
        assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
