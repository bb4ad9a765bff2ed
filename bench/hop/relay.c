// unix listener -> tcp upstream, one connection, epoll, forward both ways
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
int main(int argc,char**argv){int l=socket(AF_UNIX,SOCK_STREAM,0);struct sockaddr_un a={.sun_family=AF_UNIX};strcpy(a.sun_path,argv[1]);unlink(argv[1]);
bind(l,(void*)&a,sizeof a);listen(l,1);
int u=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in in={.sin_family=AF_INET,.sin_port=htons(atoi(argv[2]))};inet_pton(AF_INET,"127.0.0.1",&in.sin_addr);
if(connect(u,(void*)&in,sizeof in)){perror("connect");return 1;}int one=1;setsockopt(u,IPPROTO_TCP,TCP_NODELAY,&one,4);
int c=accept(l,0,0);int ep=epoll_create1(0);struct epoll_event e={.events=EPOLLIN};e.data.fd=c;epoll_ctl(ep,EPOLL_CTL_ADD,c,&e);e.data.fd=u;epoll_ctl(ep,EPOLL_CTL_ADD,u,&e);
char b[65536];for(;;){struct epoll_event ev[2];int n=epoll_wait(ep,ev,2,-1);for(int i=0;i<n;i++){int f=ev[i].data.fd;int r=read(f,b,sizeof b);if(r<=0)return 0;write(f==c?u:c,b,r);}}}
