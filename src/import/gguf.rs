//! GGUF, llama.cpp's file format (version 2 and 3): a header of typed metadata, a table of
//! tensors (name, dimensions, element type, offset) and the aligned tensor data. Opening a file
//! reads its header only; a tensor's data is read when asked for. Tensors of the types F32, F16,
//! BF16, Q8_0, Q4_0 and Q4_1 are read as f32; any other type is refused by name. Every read is
//! bounds-checked: a truncated or damaged file is an error naming the file and what was being
//! read, never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A metadata value. Integers of every width are held as i128, floats as f64.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_int(&self) -> Option<i128> {
        match self {
            MetaValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(f) => Some(*f),
            MetaValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's order: `dims[0]` varies fastest (a PyTorch `(out, in)` weight is `[in, out]`).
    pub dims: Vec<u64>,
    pub kind: u32,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in PyTorch's order (slowest first): `[out, in]` for a weight.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A GGUF file's header; tensors are read from the file on demand.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub meta: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    /// The file's length, and where its tensor data starts.
    len: u64,
    data_start: u64,
}

/// ggml's type ids and names, of every type a GGUF file may hold (so a refusal can name it).
const TYPE_NAMES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// The name of a ggml type id.
pub fn type_name(kind: u32) -> String {
    TYPE_NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or_else(|| format!("type {kind}"), |(_, n)| n.to_string())
}

/// The types laxc reads: (id, elements per block, bytes per block).
const READABLE: &[(u32, usize, usize)] = &[
    (0, 1, 4),
    (1, 1, 2),
    (30, 1, 2),
    (8, 32, 34),
    (2, 32, 18),
    (3, 32, 20),
];

/// A cursor over the file that reports where it ran out.
struct Reader<'a, R: Read> {
    from: R,
    /// The file's length, and how far the cursor is.
    len: u64,
    at: u64,
    path: &'a Path,
}

impl<'a, R: Read> Reader<'a, R> {
    fn take(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        let end = self.at.checked_add(n as u64).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(format!(
                "{}: the file ends at byte {} while reading {what} (needs {n} bytes at byte {}); \
                 is it truncated?",
                self.path.display(),
                self.len,
                self.at
            ));
        };
        let mut buf = vec![0; n];
        self.from
            .read_exact(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        self.at = end;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        Ok(s.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count, refused when it could not fit in what is left of the file.
    fn count(&mut self, what: &str, min_bytes_each: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let left = self.len - self.at;
        if n.saturating_mul(min_bytes_each as u64) > left {
            return Err(format!(
                "{}: {what} is {n}, more than the {left} bytes left in the file hold; is the \
                 file damaged?",
                self.path.display()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(what, 1)?;
        let s = self.take(n, what)?;
        String::from_utf8(s).map_err(|_| format!("{}: {what} is not UTF-8", self.path.display()))
    }

    fn value(&mut self, kind: u32, what: &str) -> Result<MetaValue, String> {
        Ok(match kind {
            0 => MetaValue::Int(self.array::<1>(what)?[0] as i128),
            1 => MetaValue::Int(self.array::<1>(what)?[0] as i8 as i128),
            2 => MetaValue::Int(u16::from_le_bytes(self.array(what)?) as i128),
            3 => MetaValue::Int(i16::from_le_bytes(self.array(what)?) as i128),
            4 => MetaValue::Int(self.u32(what)? as i128),
            5 => MetaValue::Int(i32::from_le_bytes(self.array(what)?) as i128),
            6 => MetaValue::Float(f32::from_le_bytes(self.array(what)?) as f64),
            7 => MetaValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => MetaValue::Str(self.string(what)?),
            9 => {
                let inner = self.u32(what)?;
                let n = self.count(what, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, what)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::Int(self.u64(what)? as i128),
            11 => MetaValue::Int(i64::from_le_bytes(self.array(what)?) as i128),
            12 => MetaValue::Float(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(format!(
                    "{}: {what} has value type {other}, which GGUF does not define; is the file \
                     damaged?",
                    self.path.display()
                ))
            }
        })
    }
}

impl Gguf {
    /// Reads the header and tensor table of a GGUF file.
    pub fn open(path: &Path) -> Result<Gguf, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        Gguf::parse(path, std::io::BufReader::with_capacity(1 << 20, file), len)
    }

    /// Parses the header and tensor table from `from`, the start of a GGUF file of `len` bytes.
    fn parse(path: &Path, from: impl Read, len: u64) -> Result<Gguf, String> {
        let mut r = Reader {
            from,
            len,
            at: 0,
            path,
        };
        if r.take(4, "the magic number")? != b"GGUF" {
            return Err(format!(
                "{} is not a GGUF file (it does not start with `GGUF`)",
                path.display()
            ));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "{}: GGUF version {version}; laxc reads versions 2 and 3",
                path.display()
            ));
        }
        let tensor_count = r.count("the tensor count", 8)?;
        let meta_count = r.count("the metadata count", 8)?;
        let mut meta = BTreeMap::new();
        for i in 0..meta_count {
            let key = r.string(&format!("metadata key {i}"))?;
            let kind = r.u32(&format!("the type of `{key}`"))?;
            let value = r.value(kind, &format!("`{key}`"))?;
            meta.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(tensor_count);
        for i in 0..tensor_count {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let what = format!("the entry of tensor `{name}`");
            let n_dims = r.u32(&what)? as usize;
            if n_dims > 4 {
                return Err(format!(
                    "{}: tensor `{name}` has {n_dims} dimensions; GGUF allows at most 4",
                    path.display()
                ));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64(&what))
                .collect::<Result<Vec<_>, _>>()?;
            let kind = r.u32(&what)?;
            let offset = r.u64(&what)?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let alignment = match meta.get("general.alignment").and_then(MetaValue::as_int) {
            Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
            Some(a) => {
                return Err(format!(
                    "{}: general.alignment is {a}, not a power of two",
                    path.display()
                ))
            }
            None => 32,
        };
        let data_start = r.at.div_ceil(alignment) * alignment;
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            meta,
            tensors,
            len,
            data_start,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata value, or an error naming the key that is missing.
    pub fn require(&self, key: &str) -> Result<&MetaValue, String> {
        self.meta
            .get(key)
            .ok_or_else(|| format!("{}: no metadata `{key}`", self.path.display()))
    }

    /// The tensor's values as f32, row-major in PyTorch's order ([`TensorInfo::shape`]).
    pub fn read_f32(&self, t: &TensorInfo) -> Result<Vec<f32>, String> {
        let Some(&(_, block, block_bytes)) = READABLE.iter().find(|(k, _, _)| *k == t.kind) else {
            return Err(format!(
                "{}: tensor `{}` is {}; laxc reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1 (convert \
                 the file with llama.cpp's llama-quantize, e.g. to Q8_0)",
                self.path.display(),
                t.name,
                type_name(t.kind)
            ));
        };
        let n = t.elements() as usize;
        if !n.is_multiple_of(block) {
            return Err(format!(
                "{}: tensor `{}` has {n} elements, not whole blocks of {block} for {}",
                self.path.display(),
                t.name,
                type_name(t.kind)
            ));
        }
        let size = n / block * block_bytes;
        let start = self.data_start.checked_add(t.offset);
        let inside = start
            .and_then(|s| s.checked_add(size as u64))
            .is_some_and(|e| e <= self.len);
        let (Some(start), true) = (start, inside) else {
            return Err(format!(
                "{}: the data of tensor `{}` ({size} bytes at offset {}) runs past the end of the \
                 file; is it truncated?",
                self.path.display(),
                t.name,
                t.offset
            ));
        };
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = std::fs::File::open(&self.path)?;
            file.seek(SeekFrom::Start(start))?;
            let mut bytes = vec![0; size];
            file.read_exact(&mut bytes)?;
            Ok(bytes)
        };
        let bytes = read().map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        Ok(dequantize(t.kind, &bytes, n))
    }
}

/// Decodes `n` values of a readable type.
fn dequantize(kind: u32, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    match kind {
        0 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        1 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        ),
        30 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
        ),
        8 => {
            for b in bytes.chunks_exact(34) {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                out.extend(b[2..].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        // Q4: 16 bytes of nibbles per block of 32, the low nibble of byte j is element j and
        // the high nibble element j + 16.
        2 => {
            for b in bytes.chunks_exact(18) {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                nibbles(&b[2..], |q| (q as f32 - 8.0) * d, &mut out);
            }
        }
        3 => {
            for b in bytes.chunks_exact(20) {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                let m = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
                nibbles(&b[4..], |q| q as f32 * d + m, &mut out);
            }
        }
        _ => unreachable!("only readable types are decoded"),
    }
    out
}

fn nibbles(qs: &[u8], value: impl Fn(u8) -> f32, out: &mut Vec<f32>) {
    out.extend(qs.iter().map(|&q| value(q & 0x0F)));
    out.extend(qs.iter().map(|&q| value(q >> 4)));
}

/// IEEE half precision to single, subnormals, infinities and NaN included.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1F) as u32;
    let frac = (h & 0x3FF) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: frac · 2^-24.
        (0, _) => {
            let v = frac as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (31, 0) => sign | 0x7F80_0000,
        (31, _) => sign | 0x7FC0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values_decode_exactly() {
        for (bits, want) in [
            (0x3C00u16, 1.0f32),
            (0xC000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7BFF, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x0400, 6.103_515_6e-5),
            (0x8000, -0.0),
        ] {
            assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7C00).is_infinite());
        assert!(f16_to_f32(0x7E00).is_nan());
    }

    /// One block of each quantized type, decoded by hand from its definition.
    #[test]
    fn quantized_blocks_decode_by_their_definitions() {
        // Q8_0: d = 0.5, q = -3, 0, 1, ... → q · d.
        let mut b = vec![0x00, 0x38]; // 0.5 in f16
        b.extend((0..32).map(|i| (i as i8 - 3) as u8));
        let v = dequantize(8, &b, 32);
        assert_eq!(v[0], -1.5);
        assert_eq!(v[31], 14.0);
        // Q4_1: d = 2, m = -1; byte j = j | (15 - j) << 4 → element j is 2j − 1 and element
        // 16 + j is 2(15 − j) − 1.
        let mut b = vec![0x00, 0x40, 0x00, 0xBC]; // 2.0, -1.0
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(3, &b, 32);
        for j in 0..16 {
            assert_eq!(v[j], 2.0 * j as f32 - 1.0, "{j}");
            assert_eq!(v[16 + j], 2.0 * (15 - j) as f32 - 1.0, "{}", 16 + j);
        }
        // Q4_0: d = 1; byte j = j | j << 4 → (j − 8).
        let mut b = vec![0x00, 0x3C];
        b.extend((0..16u8).map(|j| j | (j << 4)));
        let v = dequantize(2, &b, 32);
        assert_eq!(v[0], -8.0);
        assert_eq!(v[16 + 15], 7.0);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let p = Path::new("x.gguf");
        let parse = |b: &[u8]| Gguf::parse(p, b, b.len() as u64).err().unwrap();
        assert!(parse(b"GGUF").contains("truncated"));
        assert!(parse(b"PK\x03\x04....").contains("not a GGUF file"));
        // Version 3, a tensor count far beyond the file.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        assert!(parse(&b).contains("damaged"));
    }
}
