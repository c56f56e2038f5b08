//! Text generation from a language model: the prompt in one pass, then one token per pass with
//! the keys and values of earlier positions cached ([`crate::lower::ops::KvCache`]); greedy
//! (temperature 0) or sampled with temperature, top-k and top-p from a seeded generator.

pub use crate::import::tokenizer::TextCodec;
use crate::lower::ops::KvCache;
use crate::lower::LaxModel;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rand::{Rng, RngExt, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_tokens: usize,
    /// 0: the most likely token (greedy); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Sample among the k most likely tokens only.
    pub top_k: Option<usize>,
    /// Sample among the fewest most likely tokens whose probabilities reach p.
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Sampling {
    /// What is wrong with these settings, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "--temperature must be 0 or more, found {}",
                self.temperature
            ));
        }
        if self.top_k == Some(0) {
            return Err("--top-k must be at least 1".into());
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(format!("--top-p must be in (0, 1], found {p}"));
        }
        Ok(())
    }
}

/// What a generation did, for the tokens/s line.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated: usize,
    /// Seconds for the prompt's pass, and for all the one-token passes after it.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Whether a stop token ended it (rather than the token limit).
    pub stopped: bool,
}

impl Stats {
    /// Generated tokens per second after the prompt.
    pub fn tokens_per_second(&self) -> f64 {
        self.generated.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// The positions a model can attend over: its `seq`.
pub fn context(model: &LaxModel<impl Backend>) -> usize {
    model.program.tokens
}

/// Generates up to `s.max_tokens` tokens after `prompt`, calling `on_token` with each as it is
/// chosen; stops early at a token `is_stop` accepts (not passed to `on_token`).
pub fn generate<B: Backend>(
    model: &LaxModel<B>,
    prompt: &[u32],
    s: &Sampling,
    is_stop: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32),
    device: &B::Device,
) -> Result<Stats, String> {
    s.check()?;
    if prompt.is_empty() {
        return Err("the prompt is empty: there is nothing to continue".into());
    }
    let limit = context(model);
    if prompt.len() >= limit {
        return Err(format!(
            "the prompt is {} tokens; the model's context (`seq`) is {limit}",
            prompt.len()
        ));
    }
    let vocab = model.program.model.vocab;
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(format!(
            "the prompt has token {bad}, beyond the model's vocabulary of {vocab}"
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let mut stats = Stats {
        prompt_tokens: prompt.len(),
        ..Stats::default()
    };
    let started = std::time::Instant::now();
    let (mut logits, mut cache) = step(model, prompt, KvCache::new(), device);
    stats.prefill_seconds = started.elapsed().as_secs_f64();
    let decode = std::time::Instant::now();
    let room = limit - prompt.len();
    for n in 0..s.max_tokens.min(room) {
        let next = choose(&logits, s, &mut rng);
        if is_stop(next) {
            stats.stopped = true;
            break;
        }
        on_token(next);
        stats.generated += 1;
        if n + 1 == s.max_tokens.min(room) {
            break;
        }
        (logits, cache) = step(model, &[next], cache, device);
    }
    stats.decode_seconds = decode.elapsed().as_secs_f64();
    Ok(stats)
}

/// One pass over `tokens`; the logits of the last one, on the host.
fn step<B: Backend>(
    model: &LaxModel<B>,
    tokens: &[u32],
    cache: KvCache<B>,
    device: &B::Device,
) -> (Vec<f32>, KvCache<B>) {
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), device);
    let (logits, cache) = model.forward_cached(input, cache);
    let [_, n, vocab] = logits.dims();
    let last = logits.narrow(1, n - 1, 1).reshape([vocab]);
    let values = last
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("logits are floats");
    (values, cache)
}

/// The next token: the most likely at temperature 0, otherwise a draw from the tempered,
/// top-k- and top-p-truncated distribution. Ties go to the lowest id.
pub fn choose(logits: &[f32], s: &Sampling, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if s.temperature == 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if let Some(k) = s.top_k {
        order.truncate(k);
    }
    let top = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / s.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut keep = weights.len();
    if let Some(p) = s.top_p {
        let mut mass = 0.0;
        for (n, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= p {
                keep = n + 1;
                break;
            }
        }
    }
    let kept: f64 = weights[..keep].iter().sum();
    let mut x = rng.random::<f64>() * kept;
    for (n, w) in weights[..keep].iter().enumerate() {
        x -= w;
        if x <= 0.0 {
            return order[n] as u32;
        }
    }
    order[keep - 1] as u32
}

/// The text `ids` add after `shown` characters were printed: decoding the whole answer each
/// time keeps multi-byte characters split across tokens intact.
pub struct Stream {
    ids: Vec<u32>,
    shown: usize,
}

impl Stream {
    pub fn new() -> Stream {
        Stream {
            ids: Vec::new(),
            shown: 0,
        }
    }

    /// The new text once `id` is added (empty while a character is incomplete).
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> String {
        self.ids.push(id);
        let text = codec.decode(&self.ids);
        // Hold back a trailing replacement character: the rest of its bytes may follow.
        let ready = text.trim_end_matches('\u{FFFD}');
        if ready.len() <= self.shown || !ready.is_char_boundary(self.shown) {
            return String::new();
        }
        let new = ready[self.shown..].to_string();
        self.shown = ready.len();
        new
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

/// The prompt as the checkpoint's chat template lays out one user turn, ready for the
/// assistant's answer (`add_generation_prompt`).
pub fn chat_prompt(
    template: &str,
    user: &str,
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| format!("the chat template does not parse: {e}"))?;
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => user }],
        add_generation_prompt => true,
        bos_token => bos.unwrap_or(""),
        eos_token => eos.unwrap_or(""),
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("the chat template fails: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> Sampling {
        Sampling {
            max_tokens: 1,
            temperature,
            top_k,
            top_p,
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_the_most_likely_token() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let logits = [0.1, 3.0, -1.0, 3.0];
        assert_eq!(choose(&logits, &sampling(0.0, None, None), &mut rng), 1);
    }

    /// Draws follow softmax(logits / T) restricted by top-k and top-p: frequencies over many
    /// draws against the probabilities computed here by hand.
    #[test]
    fn samples_follow_the_truncated_tempered_distribution() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws = 40_000;
        let freq = |s: &Sampling, rng: &mut rand::rngs::StdRng| {
            let mut n = [0usize; 4];
            for _ in 0..draws {
                n[choose(&logits, s, rng) as usize] += 1;
            }
            n.map(|c| c as f64 / draws as f64)
        };
        let e: Vec<f64> = [2.0f64, 1.0, 0.0, -1.0]
            .iter()
            .map(|x| (x / 2.0).exp())
            .collect();
        let z: f64 = e.iter().sum();
        let f = freq(&sampling(2.0, None, None), &mut rng);
        for i in 0..4 {
            assert!((f[i] - e[i] / z).abs() < 0.01, "T=2: {f:?}");
        }
        // top-k 2 at T = 1: only the two best, in the ratio e : 1.
        let f = freq(&sampling(1.0, Some(2), None), &mut rng);
        let p0 = 1f64.exp() / (1f64.exp() + 1.0);
        assert!(
            (f[0] - p0).abs() < 0.01 && f[2] == 0.0 && f[3] == 0.0,
            "{f:?}"
        );
        // top-p 0.5 at T = 1: the best token alone holds 0.64 of the mass.
        let f = freq(&sampling(1.0, None, Some(0.5)), &mut rng);
        assert_eq!(f[0], 1.0, "{f:?}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(sampling(-1.0, None, None).check().is_err());
        assert!(sampling(1.0, Some(0), None).check().is_err());
        assert!(sampling(1.0, None, Some(1.5)).check().is_err());
    }

    #[test]
    fn a_chat_template_lays_out_one_user_turn() {
        let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let text = chat_prompt(template, "Hi", None, None).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
