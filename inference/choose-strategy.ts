/** Which strategy serves a request: pure, so every rule is tested without a network (test/choose-strategy.test.ts). */

export type StrategyName = 'local' | 'remote';

export interface StrategySituation {
    /** This node's engine has the model. */
    local: boolean,
    /** This node is on the swarm (not `--offline`). */
    networked: boolean,
    /** A connected peer has the model loaded and can take the request now. */
    peerCanServe: boolean,
    /** `--prefer`: `local` serves from this node whenever it holds the model; `remote` prefers peers. */
    prefer: 'local' | 'remote'
}

export function chooseStrategy({local, networked, peerCanServe, prefer}: StrategySituation): StrategyName {
    if (!networked)
        return 'local';
    if (!local)
        return 'remote';
    return prefer === 'remote' && peerCanServe ? 'remote' : 'local';
}
