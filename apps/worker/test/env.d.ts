// Bindings the workerd test project gets from vitest.config.ts (miniflare options).
declare module "cloudflare:workers" {
  export const env: {
    PACK_FILES: string[];
    GROUPED_FILES: string[];
    FANOUT_FILES: string[];
    PACK_BUCKET: import("@molorec/runtime-worker").R2BucketLike & { put(key: string, value: ArrayBuffer | Uint8Array): Promise<unknown> };
    [binding: `PACK_FILE_${number}` | `GROUPED_FILE_${number}` | `FANOUT_FILE_${number}`]: ArrayBuffer;
  };
}
