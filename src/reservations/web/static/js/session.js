// The API key lives in this tab's sessionStorage only: never in a URL, never in localStorage.
const KEY = "reservations.apiKey";

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}
