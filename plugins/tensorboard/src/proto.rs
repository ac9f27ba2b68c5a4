//! Just enough of protocol buffers' wire format to read TensorBoard's `Event`, `Summary`,
//! `Summary.Value`, `SummaryMetadata` and `TensorProto` (field numbers from TensorFlow's
//! `event.proto`, `summary.proto` and `tensor.proto`). Unknown fields are skipped.

/// A cursor over one message.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.pos)
                .ok_or("a varint runs past the end")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    fn bytes(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or("a length overflows")?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or("a field runs past the end of its message")?;
        self.pos = end;
        Ok(s)
    }

    fn len_delimited(&mut self) -> R<&'a [u8]> {
        let n = self.varint()? as usize;
        self.bytes(n)
    }

    fn fixed64(&mut self) -> R<[u8; 8]> {
        self.bytes(8)?.try_into().map_err(|_| "fixed64".into())
    }

    fn fixed32(&mut self) -> R<[u8; 4]> {
        self.bytes(4)?.try_into().map_err(|_| "fixed32".into())
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> R<(u64, u8)> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    fn skip(&mut self, wire: u8) -> R<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.bytes(8).map(|_| ()),
            2 => self.len_delimited().map(|_| ()),
            5 => self.bytes(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An `Event`: its time, step and the values of its summary.
#[derive(Debug, Default)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub values: Vec<Value>,
}

/// A `Summary.Value` (only what scalars need).
#[derive(Debug, Default)]
pub struct Value {
    pub tag: String,
    pub simple_value: Option<f32>,
    pub tensor: Option<Tensor>,
    pub plugin_name: Option<String>,
    pub display_name: Option<String>,
}

/// A `TensorProto`, for scalars.
#[derive(Debug, Default)]
pub struct Tensor {
    pub dtype: u64,
    pub has_shape_dims: bool,
    pub content: Vec<u8>,
    pub float_val: Vec<f32>,
    pub double_val: Vec<f64>,
    pub int_val: Vec<i64>,
}

impl Tensor {
    /// The value of a scalar tensor and its type name.
    pub fn scalar(&self) -> Option<(f64, &'static str)> {
        if self.has_shape_dims {
            return None;
        }
        let c = &self.content;
        match self.dtype {
            1 => self
                .float_val
                .first()
                .map(|&v| v as f64)
                .or_else(|| {
                    c.get(..4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                })
                .map(|v| (v, "DT_FLOAT")),
            2 => self
                .double_val
                .first()
                .copied()
                .or_else(|| {
                    c.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(f64::from_le_bytes)
                })
                .map(|v| (v, "DT_DOUBLE")),
            3 => self
                .int_val
                .first()
                .map(|&v| v as f64)
                .or_else(|| {
                    c.get(..4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                })
                .map(|v| (v, "DT_INT32")),
            9 => self
                .int_val
                .first()
                .map(|&v| v as f64)
                .or_else(|| {
                    c.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(|b| i64::from_le_bytes(b) as f64)
                })
                .map(|v| (v, "DT_INT64")),
            _ => None,
        }
    }

    fn decode(data: &[u8]) -> R<Tensor> {
        let mut t = Tensor::default();
        let mut r = Reader::new(data);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 0) => t.dtype = r.varint()?,
                (2, 2) => {
                    // TensorShapeProto: field 2 is `dim`; a scalar has none.
                    let shape = r.len_delimited()?;
                    let mut s = Reader::new(shape);
                    while !s.done() {
                        let (f, w) = s.key()?;
                        if f == 2 {
                            t.has_shape_dims = true;
                        }
                        s.skip(w)?;
                    }
                }
                (4, 2) => t.content = r.len_delimited()?.to_vec(),
                (5, 2) => {
                    for b in r.len_delimited()?.chunks_exact(4) {
                        t.float_val
                            .push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    }
                }
                (5, 5) => t.float_val.push(f32::from_le_bytes(r.fixed32()?)),
                (6, 2) => {
                    for b in r.len_delimited()?.chunks_exact(8) {
                        let a: [u8; 8] = b.try_into().map_err(|_| "double")?;
                        t.double_val.push(f64::from_le_bytes(a));
                    }
                }
                (6, 1) => t.double_val.push(f64::from_le_bytes(r.fixed64()?)),
                (7, 2) | (10, 2) => {
                    let packed = r.len_delimited()?;
                    let mut p = Reader::new(packed);
                    while !p.done() {
                        t.int_val.push(p.varint()? as i64);
                    }
                }
                (7, 0) | (10, 0) => t.int_val.push(r.varint()? as i64),
                (_, w) => r.skip(w)?,
            }
        }
        Ok(t)
    }
}

impl Value {
    fn decode(data: &[u8]) -> R<Value> {
        let mut v = Value::default();
        let mut r = Reader::new(data);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 2) => v.tag = text(r.len_delimited()?),
                (2, 5) => v.simple_value = Some(f32::from_le_bytes(r.fixed32()?)),
                (8, 2) => v.tensor = Some(Tensor::decode(r.len_delimited()?)?),
                (9, 2) => {
                    // SummaryMetadata { plugin_data = 1 { plugin_name = 1 }, display_name = 2 }
                    let meta = r.len_delimited()?;
                    let mut m = Reader::new(meta);
                    while !m.done() {
                        let (f, w) = m.key()?;
                        match (f, w) {
                            (1, 2) => {
                                let pd = m.len_delimited()?;
                                let mut p = Reader::new(pd);
                                while !p.done() {
                                    let (f, w) = p.key()?;
                                    if (f, w) == (1, 2) {
                                        v.plugin_name = Some(text(p.len_delimited()?));
                                    } else {
                                        p.skip(w)?;
                                    }
                                }
                            }
                            (2, 2) => {
                                let name = text(m.len_delimited()?);
                                if !name.is_empty() {
                                    v.display_name = Some(name);
                                }
                            }
                            (_, w) => m.skip(w)?,
                        }
                    }
                }
                (_, w) => r.skip(w)?,
            }
        }
        Ok(v)
    }
}

impl Event {
    pub fn decode(data: &[u8]) -> R<Event> {
        let mut e = Event::default();
        let mut r = Reader::new(data);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 1) => e.wall_time = f64::from_le_bytes(r.fixed64()?),
                (2, 0) => e.step = r.varint()? as i64,
                (5, 2) => {
                    let summary = r.len_delimited()?;
                    let mut s = Reader::new(summary);
                    while !s.done() {
                        let (f, w) = s.key()?;
                        if (f, w) == (1, 2) {
                            e.values.push(Value::decode(s.len_delimited()?)?);
                        } else {
                            s.skip(w)?;
                        }
                    }
                }
                (_, w) => r.skip(w)?,
            }
        }
        Ok(e)
    }
}
