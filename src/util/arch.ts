/** This machine's architecture as Kubernetes and OCI name it (GOARCH): amd64, arm64, … */
export function nodeArch(): string {
  return ({ x64: "amd64", arm64: "arm64", ppc64: "ppc64le", s390x: "s390x" } as Record<string, string>)[process.arch] ?? process.arch;
}
