/**
 * Node.js versions: pilotlight supports 20, 22 and 24 (each LTS line it is tested
 * on; package.json "engines" says >=20) and uses no API that exists only in one
 * of them.
 */
export const SUPPORTED_NODE_MAJORS = [20, 22, 24] as const;

/**
 * The AWS SDK prints a multi-line NodeVersionSupportWarning on stderr in every
 * cloud command on Node 20 (its releases after January 2027 will need Node 22).
 * It is not about anything the user did, so pilotlight turns off that one
 * warning with the SDK's own switch, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED,
 * unless the user set it; every other warning still prints.
 */
export function quietSdkNodeVersionWarning(env: NodeJS.ProcessEnv = process.env): void {
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}
