//! A restricted unpickler for PyTorch state dicts (`torch.save` of an `OrderedDict[str, Tensor]`).
//!
//! It interprets the pickle opcodes a state dict uses (protocols 2–5: containers, strings, numbers, memo,
//! `BINPERSID` storages) and knows exactly four callables: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the typed storage classes
//! (`torch.FloatStorage`, …) that name a storage's dtype. Nothing is executed: any other global, opcode or
//! malformed stream is an error with the byte offset. Tensors come out as [`TensorRef`]s (storage key, dtype,
//! offset, size, stride); [`crate::model::weights`] reads the storages from the zip.
//!
//! Bounded: containers nest at most `limits.max_nesting_depth` deep, every length is checked against the bytes
//! left before anything is allocated, and the objects the stream builds (memo fetches copy theirs) are at most
//! [`OBJECTS_PER_BYTE`] per byte of pickle, so a "billion laughs" memo bomb is refused, not expanded.
//!
//! Why not `candle_core::pickle` (measured with candle-core 0.11.1's `read_all` on the corpus of
//! tests/hostile_nifti_pth.rs, one process each): it runs no code either, but it refuses no global (the
//! `os.system` pickle loads as "0 tensors", no error), lacks the protocol-3/4 opcodes (SHORT_BINUNICODE,
//! BINUNICODE8, BINBYTES, MEMOIZE, FRAME, STACK_GLOBAL: "unknown op-code"), skips with an `eprintln!` any
//! tensor whose size is a LONG1 or whose storage is Int/Short/Char/Bool, bails on non-contiguous views, sizes
//! a BINUNICODE buffer by its claimed length before reading it (`vec![0; 4 GiB]`), and copies memo entries
//! without a bound: the 2.6 KB memo bomb grew to 7.7 GB resident in 10 s before it was killed (here: refused
//! at byte 610, 10 MB). Its loader also re-opens the zip and re-reads a shared storage once per key (the
//! encoder's two prefixes): benches/io.rs times both readers on the paper-size encoder.

use std::collections::HashMap;

use crate::limits::Limits;

/// Why a pickle was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pickle byte {offset}: {reason}")]
pub struct PickleError {
    pub offset: usize,
    pub reason: String,
}

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A tensor as the pickle describes it: a view into a storage stored elsewhere in the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage's file name under `<archive>/data/`.
    pub storage: String,
    pub dtype: StorageDtype,
    /// Elements in the storage (as the pickle claims it).
    pub storage_numel: usize,
    /// Element offset of the view.
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage { key: String, dtype: StorageDtype, numel: usize },
    Tensor(TensorRef),
    Mark,
}

/// Objects a pickle may build per byte of its own length (a state dict builds about one per 10 bytes).
pub const OBJECTS_PER_BYTE: usize = 4;

/// Parse a state-dict pickle into (key, tensor) pairs in file order, with the default [`Limits`].
pub fn parse_state_dict(data: &[u8]) -> Result<Vec<(String, TensorRef)>, PickleError> {
    parse_state_dict_limited(data, &Limits::default())
}

/// [`parse_state_dict`] with explicit bounds.
pub fn parse_state_dict_limited(data: &[u8], limits: &Limits) -> Result<Vec<(String, TensorRef)>, PickleError> {
    let budget = data.len().saturating_mul(OBJECTS_PER_BYTE).saturating_add(1024);
    let top = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        max_depth: limits.max_nesting_depth,
        budget,
        allowed: budget,
    }
    .run()?;
    let Value::Dict(items) = top else {
        return Err(PickleError {
            offset: data.len(),
            reason: format!("top-level object is {}, not a dict", kind(&top)),
        });
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(k) = k else {
            return Err(PickleError { offset: data.len(), reason: format!("a state-dict key is {}", kind(&k)) });
        };
        match v {
            Value::Tensor(t) => out.push((k, t)),
            other => {
                return Err(PickleError {
                    offset: data.len(),
                    reason: format!("value of {k:?} is {}, not a tensor", kind(&other)),
                })
            }
        }
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Global(..) => "a global",
        Value::Storage { .. } => "a storage",
        Value::Tensor(_) => "a tensor",
        Value::Mark => "a mark",
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// Deepest container nesting allowed.
    max_depth: u32,
    /// Objects still allowed to be built (each push, each object a memo copy duplicates).
    budget: usize,
    /// The budget at the start (for the error).
    allowed: usize,
}

/// (objects, nesting depth) of a value. Recursion is bounded: no stored value nests deeper than `max_depth`.
fn measure(v: &Value) -> (usize, u32) {
    let kids: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Tuple(items) | Value::List(items) => Box::new(items.iter()),
        Value::Dict(items) => Box::new(items.iter().flat_map(|(k, v)| [k, v])),
        _ => return (1, 0),
    };
    let (mut n, mut d) = (1usize, 0u32);
    for k in kids {
        let (kn, kd) = measure(k);
        n = n.saturating_add(kn);
        d = d.max(kd + 1);
    }
    (n, d)
}

/// Stack entries beyond this are refused (a state dict needs a handful).
const MAX_STACK: usize = 1 << 20;

impl Machine<'_> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError { offset: self.pos, reason: reason.into() })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        if n > self.data.len() - self.pos {
            return self.err(format!("truncated: {n} bytes wanted, {} left", self.data.len() - self.pos));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return self.err("unterminated text line");
        };
        let s = String::from_utf8(rest[..end].to_vec()).or_else(|_| self.err("non-UTF-8 text"))?;
        self.pos += end + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let b = self.take(n)?.to_vec();
        match String::from_utf8(b) {
            Ok(s) => Ok(Value::Str(s)),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Value::Mark) => self.err("unexpected mark"),
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(m) = self.stack.iter().rposition(|v| *v == Value::Mark) else {
            return self.err("no mark on the stack");
        };
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err("stack too deep");
        }
        self.spend(1)?;
        self.stack.push(v);
        Ok(())
    }

    /// Account for `n` new objects.
    fn spend(&mut self, n: usize) -> Result<(), PickleError> {
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => self.err(format!(
                "the pickle builds more than {} objects, larger than its {} bytes allow (a memo bomb?)",
                self.allowed,
                self.data.len()
            )),
        }
    }

    /// A container holding `items` must not nest deeper than the limit.
    fn check_depth<'v>(&self, items: impl IntoIterator<Item = &'v Value>) -> Result<(), PickleError> {
        for v in items {
            let (_, d) = measure(v);
            if d + 1 > self.max_depth {
                return self
                    .err(format!("containers nest deeper than {} levels (limits.max_nesting_depth)", self.max_depth));
            }
        }
        Ok(())
    }

    fn top_mut(&mut self) -> Result<&mut Value, PickleError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or(PickleError { offset: pos, reason: "stack underflow".into() })
    }

    fn memo_put(&mut self, idx: u32) -> Result<(), PickleError> {
        let Some(top) = self.stack.last() else { return self.err("memo put on an empty stack") };
        let (n, _) = measure(top);
        self.spend(n)?;
        let v = self.stack.last().cloned().unwrap_or(Value::None);
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<(), PickleError> {
        let Some(v) = self.memo.get(&idx) else { return self.err(format!("memo entry {idx} was never stored")) };
        let (n, _) = measure(v);
        self.spend(n.saturating_sub(1))?;
        let v = self.memo.get(&idx).cloned().unwrap_or(Value::None);
        self.push(v)
    }

    fn global(&self, module: &str, name: &str) -> Result<Value, PickleError> {
        let allowed = matches!(
            (module, name),
            ("collections", "OrderedDict")
                | ("torch._utils", "_rebuild_tensor_v2")
                | ("torch._utils", "_rebuild_parameter")
        ) || (module == "torch" && StorageDtype::from_class(name).is_some());
        if !allowed {
            return self
                .err(format!("refusing global {module}.{name} (only torch tensors and OrderedDict are allowed)"));
        }
        Ok(Value::Global(module.into(), name.into()))
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("pickle protocol {proto} is not supported"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                } // FRAME: length only
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.push(Value::Mark)?,
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.check_depth(&items)?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    if items.contains(&Value::Mark) {
                        return self.err("unexpected mark");
                    }
                    self.check_depth(&items)?;
                    self.push(Value::Tuple(items))?
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.le()?);
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.le()?);
                    self.memo_get(i)?
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return self.err("integer wider than 64 bits");
                    }
                    let b = self.take(n)?;
                    let mut a = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    a[..n].copy_from_slice(b);
                    self.push(Value::Int(i64::from_le_bytes(a)))?
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.le()?);
                    let v = self.text(usize::try_from(n).unwrap_or(usize::MAX))?;
                    self.push(v)?
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name)?;
                    self.push(g)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (module, name) else {
                        return self.err("STACK_GLOBAL needs two strings");
                    };
                    let g = self.global(&m, &n)?;
                    self.push(g)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: object state (OrderedDict `_metadata`, tensor attributes) carries no weights.
                    let _state = self.pop()?;
                    match self.top_mut()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => {
                            let k = kind(other);
                            return self.err(format!("BUILD on {k}"));
                        }
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.dict_insert(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.dict_insert(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.list_extend(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let Some(top) = self.stack.last() else { return self.err("DUP on an empty stack") };
                    let (n, _) = measure(top);
                    self.spend(n.saturating_sub(1))?;
                    let v = self.stack.last().cloned().unwrap_or(Value::None);
                    self.push(v)?
                }
                other => {
                    self.pos -= 1;
                    return self.err(format!("unsupported pickle opcode 0x{other:02x}"));
                }
            }
        }
    }

    fn dict_insert(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return self.err("odd number of dict items");
        }
        self.check_depth(&items)?;
        let pos = self.pos;
        let Value::Dict(d) = self.top_mut()? else {
            return Err(PickleError { offset: pos, reason: "SETITEM(S) on a non-dict".into() });
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn list_extend(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        self.check_depth(&items)?;
        let pos = self.pos;
        let Value::List(l) = self.top_mut()? else {
            return Err(PickleError { offset: pos, reason: "APPEND(S) on a non-list".into() });
        };
        l.extend(items);
        Ok(())
    }

    fn persistent(&self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = pid else { return self.err(format!("persistent id is {}, not a tuple", kind(&pid))) };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(m, cls), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if tag == "storage" && m == "torch" =>
            {
                let Some(dtype) = StorageDtype::from_class(cls) else {
                    return self.err(format!("unknown storage class torch.{cls}"));
                };
                let numel = usize::try_from(*numel).or_else(|_| self.err("negative storage size"))?;
                if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
                    return self.err(format!("bad storage key {key:?}"));
                }
                Ok(Value::Storage { key: key.clone(), dtype, numel })
            }
            _ => self.err("persistent id is not ('storage', torch.<Type>Storage, key, location, numel)"),
        }
    }

    fn reduce(&self, func: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(m, n) = func else { return self.err(format!("REDUCE on {}", kind(&func))) };
        let Value::Tuple(args) = args else { return self.err("REDUCE arguments are not a tuple") };
        match (m.as_str(), n.as_str()) {
            ("collections", "OrderedDict") => {
                if !args.is_empty() {
                    return self.err("OrderedDict with constructor arguments");
                }
                Ok(Value::Dict(Vec::new()))
            }
            ("torch._utils", "_rebuild_tensor_v2") => self.rebuild_tensor(&args),
            ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => self.err("_rebuild_parameter without a tensor"),
            },
            _ => self.err(format!("{m}.{n} cannot be called")),
        }
    }

    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value, PickleError> {
        if args.len() < 4 {
            return self.err("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)");
        }
        let Value::Storage { key, dtype, numel } = &args[0] else {
            return self.err("_rebuild_tensor_v2: first argument is not a storage");
        };
        let Value::Int(offset) = args[1] else { return self.err("_rebuild_tensor_v2: offset is not an int") };
        let ints = |v: &Value, what: &str| -> Result<Vec<usize>, PickleError> {
            let Value::Tuple(t) = v else { return self.err(format!("_rebuild_tensor_v2: {what} is not a tuple")) };
            t.iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => self.err(format!("_rebuild_tensor_v2: {what} holds a non-index")),
                })
                .collect()
        };
        let size = ints(&args[2], "size")?;
        let stride = ints(&args[3], "stride")?;
        if size.len() != stride.len() {
            return self.err("_rebuild_tensor_v2: size and stride differ in length");
        }
        let offset = usize::try_from(offset).or_else(|_| self.err("negative storage offset"))?;
        // The view must lie inside the storage (checked again against the real bytes when loading).
        if size.iter().all(|&s| s > 0) {
            let mut last = offset;
            for (&s, &st) in size.iter().zip(&stride) {
                last = (s - 1).checked_mul(st).and_then(|x| x.checked_add(last)).unwrap_or(usize::MAX);
            }
            if last >= *numel {
                return self.err(format!("tensor view reaches element {last} of a {numel}-element storage"));
            }
        }
        Ok(Value::Tensor(TensorRef {
            storage: key.clone(),
            dtype: *dtype,
            storage_numel: *numel,
            offset,
            size,
            stride,
        }))
    }
}
