import {fileURLToPath} from 'node:url';
import {ensureRpcBinaries} from '../engine/rpc/rpc-build.js';

/** Where tests keep the built RPC server: shared by every test file and run (the build takes about a minute). */
export const TEST_RPC_DIR = fileURLToPath(new URL('../.cache/rpc', import.meta.url));

/** The RPC server and backend, built once for all test files (the build lock makes concurrent callers wait). */
export function testRpcBinaries(onProgress?: (line: string) => void) {
    return ensureRpcBinaries({dir: TEST_RPC_DIR, ...(onProgress !== undefined && {onProgress})});
}
