/** Which strategy serves a request: pure, so every rule is tested without a network (test/choose-strategy.test.ts). */

export type StrategyName = 'local' | 'remote' | 'sharded';

export interface StrategySituation {
    /** This node coordinates a pipeline of peers' layer shards for the model. */
    sharded?: boolean,
    /** This node's engine has the model. */
    local: boolean,
    /** This node is on the swarm (not `--offline`). */
    networked: boolean,
    /** A connected peer has the model loaded and can take the request now. */
    peerCanServe: boolean,
    /** `--prefer`: `local` serves from this node whenever it holds the model; `remote` prefers peers. */
    prefer: 'local' | 'remote'
}

export function chooseStrategy({sharded = false, local, networked, peerCanServe, prefer}: StrategySituation): StrategyName {
    // The pipeline is this node's way of serving a model too big for it alone: nothing else here has it.
    if (sharded && networked)
        return 'sharded';
    if (!networked)
        return 'local';
    if (!local)
        return 'remote';
    return prefer === 'remote' && peerCanServe ? 'remote' : 'local';
}
