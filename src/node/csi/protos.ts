/**
 * The gRPC services of the CSI node plugin, loaded from the vendored protos beside this file:
 * csi.proto (CSI spec v1.9.0) and registration.proto (the kubelet's plugin registration API).
 * Their google/protobuf imports resolve from the definitions proto-loader and protobufjs bundle.
 */
import { join } from "node:path";
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

/** Field names as in the protos (volume_context, target_path), defaults filled in, the set member of a oneof named. */
export const PROTO_OPTIONS = { keepCase: true, defaults: true, oneofs: true } as const;

export interface CsiServices {
  Identity: ServiceClientConstructor;
  Node: ServiceClientConstructor;
  Registration: ServiceClientConstructor;
}

let loaded: CsiServices | undefined;

export function csiServices(): CsiServices {
  if (loaded) return loaded;
  const dir = import.meta.dirname;
  const root = loadPackageDefinition(loadSync([join(dir, "csi.proto"), join(dir, "registration.proto")], PROTO_OPTIONS));
  const csi = (root.csi as GrpcObject).v1 as GrpcObject;
  const reg = root.pluginregistration as GrpcObject;
  loaded = {
    Identity: csi.Identity as ServiceClientConstructor,
    Node: csi.Node as ServiceClientConstructor,
    Registration: reg.Registration as ServiceClientConstructor,
  };
  return loaded;
}
