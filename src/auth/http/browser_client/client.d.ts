// Types for the gateway's browser client, served at `{auth.prefix}/client.d.ts` next to
// `{auth.prefix}/client.js`.

/** A user as the auth API returns it (`GET {prefix}/me`, and in sign-in answers). */
export interface User {
  id: string;
  email: string;
  name: string | null;
  roles: string[];
  /** RFC 3339, UTC. */
  created_at: string;
}

export interface ClientOptions {
  /**
   * Runs when a request got a 401 and the session could not be refreshed (once for a burst of
   * requests that failed together). Default: go to
   * `{prefix}/login?next=<current path and query>`. `null` restores the default.
   */
  onUnauthenticated?: (() => void) | null;
}

/** The error `login`, `signup`, `logout` and `me` reject with; `message` is the API's `detail`. */
export class ApiError extends Error {
  readonly name: "ApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The API's `detail` (same as `message`). */
  readonly detail: string;
  /** The response (its body already read). */
  readonly response: Response;
}

/** Where the gateway's API lives, taken from the module's own URL. */
export declare const endpoint: { readonly origin: string; readonly prefix: string };

/** Changes how the client behaves; see {@link ClientOptions}. */
export declare function configure(options?: ClientOptions): void;

/** The CSRF token from the readable CSRF cookie, or null when there is no session. */
export declare function csrfToken(): string | null;

/** Refreshes the session now (shared with concurrent refreshes); resolves whether it worked. */
export declare function refresh(): Promise<boolean>;

/**
 * `window.fetch` for the gateway's origin: cookies included, `X-CSRF-Token` on unsafe methods,
 * one shared refresh and one retry after a 401. Other origins: `window.fetch` unchanged.
 */
declare function gatewayFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
export { gatewayFetch as fetch };

/** Signs in; resolves to the user. */
export declare function login(email: string, password: string): Promise<User>;

/** Creates an account and signs in; resolves to the user. */
export declare function signup(email: string, password: string, name?: string): Promise<User>;

/** Signs out this session and deletes its cookies. */
export declare function logout(): Promise<void>;

/** The signed-in user, or null when signed out. */
export declare function me(): Promise<User | null>;

declare const client: {
  configure: typeof configure;
  csrfToken: typeof csrfToken;
  endpoint: typeof endpoint;
  fetch: typeof gatewayFetch;
  login: typeof login;
  logout: typeof logout;
  me: typeof me;
  refresh: typeof refresh;
  signup: typeof signup;
  ApiError: typeof ApiError;
};
export default client;
