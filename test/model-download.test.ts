import test from 'ava';
import {downloadUrlOf} from '../engine/model-download.js';

test('downloadUrlOf resolves hf: references against HF_ENDPOINT, and refuses dot and empty segments, in the branch too', (t) => {
    const saved = {HF_ENDPOINT: process.env.HF_ENDPOINT, MODEL_ENDPOINT: process.env.MODEL_ENDPOINT};
    t.teardown(() => {
        for (const [name, value] of Object.entries(saved)) {
            if (value === undefined)
                delete process.env[name];
            else
                process.env[name] = value;
        }
    });
    process.env.HF_ENDPOINT = 'https://hub.example/';
    delete process.env.MODEL_ENDPOINT;
    t.is(downloadUrlOf('https://cdn.example/m.gguf'), 'https://cdn.example/m.gguf');
    t.is(downloadUrlOf('hf:doge-lab/tiny-GGUF/q8/m.gguf'), 'https://hub.example/doge-lab/tiny-GGUF/resolve/main/q8/m.gguf');
    t.is(downloadUrlOf('hf:doge-lab/tiny-GGUF/m.gguf#v2'), 'https://hub.example/doge-lab/tiny-GGUF/resolve/v2/m.gguf');
    // A ref with slashes is one segment of the URL (as node-llama-cpp writes it).
    t.is(downloadUrlOf('hf:doge-lab/tiny-GGUF/m.gguf#refs/pr/1'), 'https://hub.example/doge-lab/tiny-GGUF/resolve/refs%2Fpr%2F1/m.gguf');
    for (const ref of [
        'hf:doge-lab/tiny-GGUF/m.gguf#..', 'hf:doge-lab/tiny-GGUF/m.gguf#.', 'hf:doge-lab/tiny-GGUF/m.gguf#/', 'hf:doge-lab/tiny-GGUF/m.gguf#',
        'hf:doge-lab/tiny-GGUF/m.gguf#refs/../main', 'hf:doge-lab/tiny-GGUF/m.gguf#refs//pr', 'hf:doge-lab/tiny-GGUF/m.gguf#../../x',
        'hf:doge-lab/tiny-GGUF/../m.gguf', 'hf:doge-lab/tiny-GGUF/q8//m.gguf', 'hf:../tiny-GGUF/m.gguf', 'hf:doge-lab/./m.gguf',
        'hf:doge-lab/tiny-GGUF:Q4_K_M'
    ])
        t.is(downloadUrlOf(ref), undefined, ref);
});
