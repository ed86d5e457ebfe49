// The login page: the failed-login notice and the switch between password and token.
// A file, not an inline script, so the page's Content-Security-Policy (`script-src 'self'`) runs it.
(function () {
  'use strict';
  var failed = location.hash === '#failed';
  document.getElementById('login-error').hidden = !failed;
  var tokenMode = false;
  var pw = document.getElementById('login-password-fields');
  var tk = document.getElementById('login-token-fields');
  var toggle = document.getElementById('login-mode');
  function setMode(token) {
    tokenMode = token;
    pw.hidden = token;
    tk.hidden = !token;
    pw.querySelectorAll('input').forEach(function (i) { i.disabled = token; });
    tk.querySelectorAll('input').forEach(function (i) { i.disabled = !token; });
    toggle.textContent = token ? 'Use a username and password instead' : 'Use an access token instead';
    (token ? document.getElementById('login-token') : document.getElementById('login-username')).focus();
  }
  toggle.addEventListener('click', function () { setMode(!tokenMode); });
  if (failed) {
    document.getElementById('login-form').addEventListener('input', function () {
      document.getElementById('login-error').hidden = true;
    }, { once: true });
  }
})();
