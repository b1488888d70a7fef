// Compile-only stand-in for WebKit's WKWebView (https://developer.apple.com/documentation/webkit/wkwebview),
// which Tauri's Plugin.load(webview:) takes. Nothing here runs.
// Like the SDK's WebKit on iOS, it re-exports UIKit (and so Foundation).
@_exported import UIKit

open class WKWebView {}
