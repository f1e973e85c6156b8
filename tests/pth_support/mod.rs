//! Test support: write PyTorch zip checkpoints (`torch.save` layout) byte by byte, following torch's documented
//! format — a zip of `archive/data.pkl` (protocol-2 pickle of an OrderedDict of `_rebuild_tensor_v2` calls with
//! persistent-id storages), `archive/data/<key>` (little-endian storage bytes), `archive/version`,
//! `archive/byteorder`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use candle_core::Tensor;

/// One tensor entry: key, storage key, offset, size, stride.
pub struct Entry<'a> {
    pub key: &'a str,
    pub storage: &'a str,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

/// A torch-style protocol-2 pickle of an OrderedDict; a storage seen before is fetched from the memo
/// (as pickle does for a shared object; BINGET/BINPUT below 256, LONG_BINGET/LONG_BINPUT above). `globals_override` replaces the rebuild function's global.
pub fn state_dict_pickle(entries: &[Entry], numel: &BTreeMap<&str, usize>, rebuild: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"ccollections\nOrderedDict\n)R(");
    let mut memo: BTreeMap<&str, u32> = BTreeMap::new();
    let mut next = 0u32;
    for e in entries {
        unicode(&mut p, e.key);
        p.push(b'c');
        p.extend_from_slice(rebuild.as_bytes());
        p.push(b'(');
        if let Some(&m) = memo.get(e.storage) {
            match u8::try_from(m) {
                Ok(m) => p.extend_from_slice(&[b'h', m]),
                Err(_) => {
                    p.push(b'j');
                    p.extend_from_slice(&m.to_le_bytes());
                }
            }
        } else {
            p.push(b'(');
            unicode(&mut p, "storage");
            p.extend_from_slice(b"ctorch\nFloatStorage\n");
            unicode(&mut p, e.storage);
            unicode(&mut p, "cpu");
            int(&mut p, numel[e.storage]);
            p.extend_from_slice(b"tQ");
            match u8::try_from(next) {
                Ok(m) => p.extend_from_slice(&[b'q', m]),
                Err(_) => {
                    p.push(b'r');
                    p.extend_from_slice(&next.to_le_bytes());
                }
            }
            memo.insert(e.storage, next);
            next += 1;
        }
        int(&mut p, e.offset);
        p.push(b'(');
        e.size.iter().for_each(|&s| int(&mut p, s));
        p.extend_from_slice(b"t(");
        e.stride.iter().for_each(|&s| int(&mut p, s));
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

/// Write a torch zip: pickle + little-endian f32 storages.
pub fn write_pth(path: &Path, pickle: &[u8], storages: &BTreeMap<&str, Vec<f32>>) {
    let f = std::fs::File::create(path).expect("create");
    let mut z = zip::ZipWriter::new(f);
    let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opt).expect("pkl");
    z.write_all(pickle).expect("write");
    z.start_file("archive/byteorder", opt).expect("bo");
    z.write_all(b"little").expect("write");
    for (k, v) in storages {
        z.start_file(format!("archive/data/{k}"), opt).expect("storage");
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        z.write_all(&bytes).expect("write");
    }
    z.start_file("archive/version", opt).expect("version");
    z.write_all(b"3\n").expect("write");
    z.finish().expect("finish");
}

/// The rebuild function torch uses.
pub const REBUILD: &str = "torch._utils\n_rebuild_tensor_v2\n";

/// Contiguous strides of `size`.
pub fn contiguous_stride(size: &[usize]) -> Vec<usize> {
    let mut stride = vec![1usize; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1];
    }
    stride
}

/// Write `tensors` (f32) as the published encoder layout: every `backbone.backbone.X` also appears as
/// `slice_distributed.module.backbone.X` sharing its storage; the fixture's own twin copies are ignored.
/// `drop` removes a key, `extra` adds one (sharing storage "0").
pub fn write_encoder_pth(
    path: &Path,
    tensors: &std::collections::HashMap<String, Tensor>,
    drop: Option<&str>,
    extra: Option<&str>,
) {
    let twin = "slice_distributed.module.backbone.";
    let mut storages: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut plan: Vec<(String, String, Vec<usize>)> = Vec::new();
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    for k in keys {
        if k.starts_with(twin) || Some(k.as_str()) == drop {
            continue;
        }
        let t = &tensors[k];
        let sk = storages.len().to_string();
        storages.insert(sk.clone(), t.flatten_all().and_then(|t| t.to_vec1()).expect("f32 values"));
        plan.push((k.clone(), sk.clone(), t.dims().to_vec()));
        if let Some(rest) = k.strip_prefix("backbone.backbone.") {
            plan.push((format!("{twin}{rest}"), sk, t.dims().to_vec()));
        }
    }
    if let Some(x) = extra {
        let n = storages["0"].len();
        plan.push((x.to_string(), "0".into(), vec![n]));
    }
    let entries: Vec<Entry> = plan
        .iter()
        .map(|(k, s, size)| Entry {
            key: k,
            storage: s,
            offset: 0,
            size: size.clone(),
            stride: contiguous_stride(size),
        })
        .collect();
    let numel = storages.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    let st: BTreeMap<&str, Vec<f32>> = storages.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    write_pth(path, &state_dict_pickle(&entries, &numel, REBUILD), &st);
}
