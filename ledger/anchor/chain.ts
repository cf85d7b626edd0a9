/**
 * Talking to the chain: the provider, the chain-id check, waiting for a receipt, deploying the anchoring contract
 * (docs/architecture.md, "Ledger", "Anchoring").
 */
import {ContractFactory, FetchRequest, type InterfaceAbi, JsonRpcProvider, Network, type Wallet} from 'ethers';
import {contributionAnchorAbi, contributionAnchorBytecode} from '../generated/contribution-anchor.js';
import {LedgerError} from '../ledger-error.js';

/** How long one chain RPC call may take before the chain counts as unavailable. */
const RPC_TIMEOUT_MS = 15_000;
/**
 * How often a sent transaction is looked for on the chain. (Polled by hand: ethers' own waitForTransaction prints RPC
 * errors to stdout, which would break a daemon's JSON log lines.)
 */
export const RECEIPT_POLL_MS = 500;

export interface ChainSettings {
    /** JSON-RPC endpoint. */
    rpcUrl: string,
    /** The chain's id: 2000 for Dogechain, checked before anything is sent. */
    chainId: number,
    /** How long one RPC call may take before the chain counts as unavailable; defaults to 15 s. */
    rpcTimeoutMs?: number
}

/** A JSON-RPC provider that never asks the chain for its id again, never caches, and gives up on a silent chain. */
export function chainProvider({rpcUrl, chainId, rpcTimeoutMs = RPC_TIMEOUT_MS}: ChainSettings) {
    const request = new FetchRequest(rpcUrl);
    request.timeout = rpcTimeoutMs;
    // ethers' result cache returns stale nonces against fast chains ("nonce too low"): off.
    return new JsonRpcProvider(request, Network.from(chainId), {staticNetwork: Network.from(chainId), cacheTimeout: -1});
}

/** Asks the chain for its id: the configured one, or a WRONG_CHAIN refusal before anything is signed. */
export async function checkChain(provider: JsonRpcProvider, expected: number) {
    let actual: bigint;
    try {
        actual = BigInt(await provider.send('eth_chainId', []) as string);
    } catch (error) {
        throw LedgerError.chainUnavailable(`the chain RPC does not answer: ${shortReason(error)}`);
    }
    if (actual !== BigInt(expected))
        throw LedgerError.wrongChain(`the chain RPC serves chain id ${actual}, not the configured ${expected}: nothing was sent`);
}

/**
 * A provider for `settings` whose chain id is checked, for the length of `use`; any failure that is not a
 * LedgerError is CHAIN_UNAVAILABLE, saying `doing`.
 */
export async function withChain<T>(settings: ChainSettings, doing: string, use: (provider: JsonRpcProvider) => Promise<T>): Promise<T> {
    const provider = chainProvider(settings);
    try {
        await checkChain(provider, settings.chainId);
        return await use(provider);
    } catch (error) {
        throw error instanceof LedgerError ? error : LedgerError.chainUnavailable(`${doing}${doing ? ': ' : ''}${shortReason(error)}`);
    } finally {
        provider.destroy();
    }
}

/** Deploys the anchoring contract with `wallet`; returns its address, and the block event reads start from. */
export function deployAnchorContract(settings: ChainSettings, wallet: Wallet) {
    return deployContract(settings, wallet, contributionAnchorAbi, contributionAnchorBytecode, 'the anchoring contract');
}

/** Deploys a contract from `ledger/generated/` with `wallet`: its address, transaction, block and gas used. */
export function deployContract(settings: ChainSettings, wallet: Wallet, abi: InterfaceAbi, bytecode: string, what: string) {
    return withChain(settings, `cannot deploy ${what}`, async (provider) => {
        const factory = new ContractFactory(abi, bytecode, wallet.connect(provider));
        const contract = await factory.deploy();
        const deployment = contract.deploymentTransaction();
        await contract.waitForDeployment();
        const receipt = deployment === null ? null : await provider.getTransactionReceipt(deployment.hash);
        return {address: await contract.getAddress(), txHash: deployment?.hash ?? null, blockNumber: receipt?.blockNumber ?? 0, gasUsed: receipt?.gasUsed ?? 0n};
    });
}

/** An error's message without ethers' long request dumps. */
export function shortReason(error: unknown) {
    const candidate = error as {shortMessage?: string, message?: string};
    return (candidate.shortMessage ?? candidate.message ?? String(error)).slice(0, 300);
}
