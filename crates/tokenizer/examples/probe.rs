use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let unit = args[1].replace("\\n", "\n");
    let n: usize = args[2].parse().unwrap();
    let s = unit.repeat(n);
    let sp = chatforge_tokenizer::Splitter::new(chatforge_tokenizer::GPT4_PATTERN).unwrap();
    let t = Instant::now();
    let c = sp.split(&s).len();
    println!("gpt4 split {n}: {} chunks {:.3}s", c, t.elapsed().as_secs_f64());
    let sp = chatforge_tokenizer::Splitter::new(chatforge_tokenizer::GPT2_PATTERN).unwrap();
    let t = Instant::now();
    let c = sp.split(&s).len();
    println!("gpt2 split {n}: {} chunks {:.3}s", c, t.elapsed().as_secs_f64());
    let text = std::fs::read_to_string("/work/shared/data/tinyshakespeare/input.txt").unwrap();
    let docs: Vec<&str> = text.split("\n\n").collect();
    let tok = chatforge_tokenizer::Tokenizer::train(&docs, &chatforge_tokenizer::TrainConfig::with_vocab_size(2000)).unwrap();
    let t = Instant::now();
    let ids = tok.encode(&s);
    println!("encode {n}: {} ids {:.3}s", ids.len(), t.elapsed().as_secs_f64());
}
#[allow(dead_code)]
fn unused() {}
