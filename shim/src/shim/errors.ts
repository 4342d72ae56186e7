// The validation of ids that end up in paths. (Errors of the layers below keep their codes up
// to containerd through rpc/errors.ts's toRpcError.)
import { Code, RpcError } from '../rpc/errors.js';

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Container and exec ids name directories and guest objects: refuse anything path-like. */
export function validateId(value: unknown, field: string): string {
  const id = typeof value === 'string' ? value : '';
  if (!ID_RE.test(id)) {
    throw new RpcError(Code.InvalidArgument, `${field} ${JSON.stringify(value ?? '')} is invalid: use 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit`);
  }
  return id;
}
